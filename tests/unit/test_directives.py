"""#SBATCH/#DS01Q directives read as sbatch reads them: a corpus of scripts with hand-derived expectations
(tests/fixtures/sbatch/expected.yaml), then focused tables for each value syntax."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml

from ds01q import slurm_values as leaf_values
from ds01q.client import directives, sbatch_options, sbatch_reader, slurm_values
from ds01q.client.directives import (
    Parsed,
    expand_pattern,
    gres,
    parse_directives,
    parse_options,
    read_directives,
    split_directive,
)
from ds01q.client.slurm_values import (
    format_mbytes,
    format_time,
    parse_array,
    parse_begin,
    parse_dependency,
    parse_export,
    parse_mbytes,
    parse_signal,
    parse_time_limit,
)
from ds01q.errors import RequestError
from ds01q.units import parse_duration, parse_size

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "sbatch"
EXPECTED: dict[str, dict] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))


def script(name: str) -> str:
    return (CORPUS / name).read_bytes().decode("utf-8")  # bytes: keep \r\n where a script has it


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(RequestError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- the corpus
def test_corpus_is_complete():
    scripts = {p.name for p in CORPUS.glob("*.sh")}
    assert scripts == set(EXPECTED)
    assert len(scripts) >= 60


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda n: n.removesuffix(".sh"))
def test_corpus(name):
    want = EXPECTED[name]
    text = script(name)
    if "error" in want:
        assert want["error"] in one_line_error(read_directives, text)
        return
    got = read_directives(text)
    assert got.options == want["options"]
    wanted_warnings = want.get("warnings", [])
    assert len(got.warnings) == len(wanted_warnings), got.warnings
    for line, part in zip(got.warnings, wanted_warnings):
        assert part in line and "\n" not in line
    assert parse_directives(text) == want["options"]


@pytest.mark.parametrize("name", sorted(n for n, w in EXPECTED.items() if "options" in w),
                         ids=lambda n: n.removesuffix(".sh"))
def test_corpus_values_are_what_the_server_reads(name):
    """time and mem are emitted in forms ds01q.units reads back exactly; gpus is an int."""
    opts = parse_directives(script(name))
    if "time" in opts:
        assert parse_duration(opts["time"]) == parse_time_limit(opts["time"])
    if "mem" in opts:
        assert parse_size(opts["mem"]) == parse_mbytes(opts["mem"]) * 2**20
    if "gpus" in opts:
        assert type(opts["gpus"]) is int
    assert sum(k in opts for k in ("gpus", "mig", "gpu_mem")) <= 1


# ----------------------------------------------------------------------------- --time
@pytest.mark.parametrize("text, seconds", [
    ("5", 300), ("90", 5400), ("30:00", 1800), ("5:30", 360), ("0:30", 60), ("0:0:1", 60),
    ("1:02:03", 3780), ("11:0:0", 39600), ("48:00:00", 172800), ("0-05:00", 18000), ("7-00", 604800),
    ("1-0", 86400), ("2-3:4", 2 * 86400 + 3 * 3600 + 240), ("1-2:3:4", 93840), ("1-00:00:00", 86400),
    ("UNLIMITED", None), ("infinite", None), ("Unlimited", None), ("-1", None), ("0", None), ("0:00", None),
    ("24h", 86400), ("90s", 90), ("1.5h", 5400), ("2d", 172800),
])
def test_time_formats(text, seconds):
    assert parse_time_limit(text) == seconds
    if seconds is not None:
        assert parse_duration(format_time(seconds)) == seconds


@pytest.mark.parametrize("seconds, shown", [(60, "0:01:00"), (7200, "2:00:00"), (86400, "1-00:00:00"),
                                            (93840, "1-02:04:00"), (45 * 86400, "45-00:00:00")])
def test_time_format(seconds, shown):
    assert format_time(seconds) == shown


@pytest.mark.parametrize("text", ["1:2:3:4", "", "h", "1-", "-5", "1:", ":5", "5 m", "1.5", "1--2", "1-2-3",
                                  "1-2:3:4:5", "0s", "ten"])
def test_bad_times(text):
    assert "time limit" in one_line_error(parse_time_limit, text)


def test_time_directive_rounds_up_and_unlimited_warns():
    assert parse_directives("#SBATCH -t 1:30\n") == {"time": "0:02:00"}
    p = read_directives("#SBATCH -t 1:00:00\n#SBATCH --time=UNLIMITED\n")
    assert p.options == {} and "group's maximum run time" in p.warnings[0]


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("text, mib", [
    ("4096", 4096), ("500M", 500), ("500MB", 500), ("500m", 500), ("1K", 1), ("1025K", 2), ("1048576K", 1024),
    ("2G", 2048), ("2GB", 2048), ("2gb", 2048), ("1T", 1048576), ("1tb", 1048576), ("0", 0), ("0G", 0),
    ("1.5G", 1536), ("10GiB", 10240),
])
def test_sizes(text, mib):
    assert parse_mbytes(text) == mib


@pytest.mark.parametrize("text", ["lots", "", "-1G", "1X", "G", "512B", "1.5.2G", "1 G", "1e3"])
def test_bad_sizes(text):
    assert "is not a size" in one_line_error(parse_mbytes, text)


@pytest.mark.parametrize("mib, shown", [(1024, "1g"), (1536, "1536m"), (1048576, "1t"), (3 * 1048576 + 1024, "3073g"),
                                        (1, "1m")])
def test_size_format(mib, shown):
    assert format_mbytes(mib) == shown
    assert parse_size(shown) == mib * 2**20


@pytest.mark.parametrize("lines, mem, cpus", [
    ("--mem=8G", "8g", None),
    ("-c 4 --mem-per-cpu=2G", "8g", 4),
    ("--mem-per-cpu=2G -c 4", "8g", 4),  # resolved at the end, whatever the order
    ("--cpus 2.5 --mem-per-cpu=1G", "2560m", 2.5),
    ("--gres=gpu:3 --mem-per-gpu=10G", "30g", None),
    ("--mem-per-gpu=10G\n#SBATCH --gpus=2", "20g", None),
    ("--gpus=2 --cpus-per-gpu=4 --mem-per-cpu=1G", "8g", 8),
    ("--mem-per-cpu=1G --mem=3G", "3g", None),  # a later memory option replaces an earlier one
])
def test_memory_resolution(lines, mem, cpus):
    opts = parse_directives(f"#SBATCH {lines}\n")
    assert opts.get("mem") == mem and opts.get("cpus") == cpus


def test_memory_per_gpu_without_gpu_option_assumes_one_and_warns():
    p = read_directives("#SBATCH --mem-per-gpu=12G\n")
    assert p.options == {"mem": "12g"} and "one GPU" in p.warnings[0]


def test_per_gpu_amounts_with_no_gpus_are_refused():
    assert "asks for no GPUs" in one_line_error(parse_directives, "#SBATCH --gpus=0 --mem-per-gpu=4G\n")


def test_mem_zero_means_no_limit():
    p = read_directives("#SBATCH --mem=4G\n#SBATCH --mem=0\n")
    assert p.options == {} and "no memory limit" in p.warnings[0]


# ----------------------------------------------------------------------------- GPUs
@pytest.mark.parametrize("value, want", [
    ("gpu", {"gpus": 1}), ("gpu:2", {"gpus": 2}), ("gpu:0", {"gpus": 0}), ("none", {"gpus": 0}),
    ("gpu:a100:2", {"gpus": 2, "gpu_model": "a100"}), ("gpu:a100", {"gpus": 1, "gpu_model": "a100"}),
    ("gpu:H100:1", {"gpus": 1, "gpu_model": "h100"}), ("gpu:titanrtx:4", {"gpus": 4, "gpu_model": "titanrtx"}),
    ("gpu:2g.10gb:1", {"mig": "2g.10gb"}), ("gpu:1g.5gb", {"mig": "1g.5gb"}), ("gpu:7g.40gb:1", {"mig": "7g.40gb"}),
    ("gpu:1g.10gb+me:1", {"mig": "1g.10gb+me"}), ("gpu:2g.20gb", {"mig": "2g.20gb"}),
])
def test_gres(value, want):
    assert gres(value) == want


@pytest.mark.parametrize("value, part", [
    ("gpu:2g.10gb:2", "MIG profile is one slice"), ("gpu:1g.5gb:0", "MIG profile is one slice"),
    ("shard:1", "gpu[:TYPE][:N]"), ("gpu:a100:two", "whole number"), ("gpu:2,shard:1", "one generic resource"),
    ("gpu:a:b:c", "gpu[:TYPE][:N]"), ("gpu:a100:", "whole number"), ("gpu:!x:1", "not a GPU type"),
])
def test_bad_gres(value, part):
    msg = one_line_error(gres, value)
    assert msg.startswith("--gres: ") and part in msg


@pytest.mark.parametrize("option", ["--gpus", "-G", "--gpus-per-node", "--gpus-per-task", "--gpus-per-n",
                                    "--gpus-per-t"])
def test_gpu_count_options(option):
    assert parse_options([option, "a100:2"]).options == {"gpus": 2, "gpu_model": "a100"}
    assert parse_options([option, "1g.10gb:1"]).options == {"mig": "1g.10gb"}
    assert parse_options([option, "3"]).options == {"gpus": 3}


def test_gpus_needs_a_count():
    assert "whole number" in one_line_error(parse_options, ["--gpus=a100"])


def test_a_later_gpu_option_replaces_the_earlier_request():
    assert parse_directives("#SBATCH --gres=gpu:a100:2\n#DS01Q --mig 1g.10gb\n") == {"mig": "1g.10gb"}
    assert parse_directives("#DS01Q --mig 1g.10gb\n#SBATCH --gpus=2\n") == {"gpus": 2}
    assert parse_directives("#DS01Q --gpu-mem 20g\n") == {"gpu_mem": "20g"}


# ----------------------------------------------------------------------------- --array
@pytest.mark.parametrize("value, indices, throttle", [
    ("0-99%4", list(range(100)), 4), ("1,3,5", [1, 3, 5], None), ("0-15:4", [0, 4, 8, 12], None),
    ("1-5%2", [1, 2, 3, 4, 5], 2), ("7", [7], None), ("3,1,1-2", [1, 2, 3], None), ("0-9999", list(range(10000)), None),
    ("1000000", [1000000], None), ("0-10:5,100", [0, 5, 10, 100], None), ("0-0", [0], None),
])
def test_array_specs(value, indices, throttle):
    assert parse_array(value) == {"indices": indices, "throttle": throttle}


@pytest.mark.parametrize("value, part", [
    ("5-1", "empty range"), ("0-15:0", "empty range"), ("a-b", "not an index range"), ("1-5%0", "at once"),
    ("1-5%", "at once"), ("1-5%x", "at once"), ("0-1000001", "above the maximum 1000000"),
    ("0-10000", "more than 10000 tasks"), ("0-5000,6000-11000", "more than 10000 tasks"), ("", "not an index range"),
    ("1,,2", "not an index range"), ("-1", "not an index range"), ("1:2", "not an index range"),
])
def test_bad_array_specs(value, part):
    assert part in one_line_error(parse_array, value)


# ----------------------------------------------------------------------------- --dependency
@pytest.mark.parametrize("value, want", [
    ("afterok:1:2", {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": 1}, {"id": 2}]}]}),
    ("afterany:3?afternotok:4", {"mode": "any", "items": [{"type": "afterany", "jobs": [{"id": 3}]},
                                                          {"type": "afternotok", "jobs": [{"id": 4}]}]}),
    ("afterok:1,singleton", {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": 1}]},
                                                      {"type": "singleton"}]}),
    ("singleton", {"mode": "all", "items": [{"type": "singleton"}]}),
    ("after:5+30:6", {"mode": "all", "items": [{"type": "after", "jobs": [{"id": 5, "delay_min": 30}, {"id": 6}]}]}),
    ("afterok:7_2", {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": 7, "task": 2}]}]}),
    ("aftercorr:8", {"mode": "all", "items": [{"type": "aftercorr", "jobs": [{"id": 8}]}]}),
    ("123", {"mode": "all", "items": [{"type": "afterany", "jobs": [{"id": 123}]}]}),
    ("AFTEROK:9", {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": 9}]}]}),
])
def test_dependency_specs(value, want):
    assert parse_dependency(value) == want


@pytest.mark.parametrize("value, part", [
    ("afterok", "needs job ids"), ("afterok:", "needs job ids"), ("singleton:1", "no job ids"),
    ("afterok:x", "not a job id"), ("afterok:0", "not a job id"), ("afterok:1+5", "only with after"),
    ("before:1", "not a dependency"), ("afterok:1,afterok:2?afterok:3", "mixes"), ("", "not a dependency"),
    ("afterok:1,", "not a dependency"),
])
def test_bad_dependency_specs(value, part):
    assert part in one_line_error(parse_dependency, value)


# ----------------------------------------------------------------------------- --begin, --signal, --export
@pytest.mark.parametrize("value, want", [
    ("now", {"kind": "delay", "seconds": 0}), ("now+60", {"kind": "delay", "seconds": 60}),
    ("now+5minutes", {"kind": "delay", "seconds": 300}), ("NOW+1hour", {"kind": "delay", "seconds": 3600}),
    ("now+2days", {"kind": "delay", "seconds": 172800}), ("now+1week", {"kind": "delay", "seconds": 604800}),
    ("now-1hour", {"kind": "delay", "seconds": 0}), ("today", {"kind": "delay", "seconds": 0}),
    ("16:00", {"kind": "time", "time": "16:00:00"}), ("9:05:30", {"kind": "time", "time": "09:05:30"}),
    ("midnight", {"kind": "time", "time": "00:00:00"}), ("tomorrow", {"kind": "time", "time": "00:00:00"}),
    ("teatime", {"kind": "time", "time": "16:00:00"}), ("noon", {"kind": "time", "time": "12:00:00"}),
    ("2030-01-31", {"kind": "date", "at": "2030-01-31T00:00:00"}),
    ("2030-01-31T08:30:15", {"kind": "date", "at": "2030-01-31T08:30:15"}),
])
def test_begin(value, want):
    assert parse_begin(value) == want


@pytest.mark.parametrize("value", ["25:00", "12:60", "2030-02-30", "2030-01-31T24:00", "yesterday", "now+5fortnights",
                                   "", "1/2/2030"])
def test_bad_begin(value):
    msg = one_line_error(parse_begin, value)
    assert "not a" in msg


@pytest.mark.parametrize("value, want", [
    ("USR1", {"signal": "USR1", "seconds": 60, "batch_only": False}),
    ("B:USR1@120", {"signal": "USR1", "seconds": 120, "batch_only": True}),
    ("SIGTERM", {"signal": "TERM", "seconds": 60, "batch_only": False}),
    ("sigint@0", {"signal": "INT", "seconds": 0, "batch_only": False}),
    ("10", {"signal": "USR1", "seconds": 60, "batch_only": False}),
    ("RB:2@30", {"signal": "INT", "seconds": 30, "batch_only": True, "reservation": True}),
])
def test_signal(value, want):
    assert parse_signal(value) == want


@pytest.mark.parametrize("value", ["USR9", "X:USR1", "USR1@70000", "", "B:", "@60", "999"])
def test_bad_signal(value):
    one_line_error(parse_signal, value)


@pytest.mark.parametrize("value, mode, names, env", [
    ("ALL", "ALL", [], {}), ("NONE", "NONE", [], {}), ("NIL", "NIL", [], {}), ("all", "ALL", [], {}),
    ("ALL,A=1,B", "ALL", ["B"], {"A": "1"}), ("A=1,B=x=y", "NONE", [], {"A": "1", "B": "x=y"}),
    ("HOME,PATH", "NONE", ["HOME", "PATH"], {}), ("A=", "NONE", [], {"A": ""}),
])
def test_export(value, mode, names, env):
    assert parse_export(value) == ({"mode": mode, "names": names}, env)


@pytest.mark.parametrize("value", ["NONE,A=1", "ALL,NIL", "1A=2", "ALL,,A", "A-B=1", ""])
def test_bad_export(value):
    one_line_error(parse_export, value)


def test_export_env_and_ds01q_env_merge():
    opts = parse_directives("#SBATCH --export=ALL,A=1,B=2\n#DS01Q --env B=3 --env C=4\n")
    assert opts["env"] == {"A": "1", "B": "3", "C": "4"} and opts["export"] == {"mode": "ALL", "names": []}


def test_mail_types():
    assert parse_options(["--mail-type=begin,END,end"]).options == {"mail_type": ["BEGIN", "END"]}
    assert parse_options(["--mail-type=ALL", "--mail-type=TIME_LIMIT_80"]).options == {
        "mail_type": ["ALL", "TIME_LIMIT_80"]}
    assert "not a mail type" in one_line_error(parse_options, ["--mail-type=SOMETIMES"])


# ----------------------------------------------------------------------------- expand_pattern
JOB = {"job_id": 42, "name": "train", "user": "alice"}


@pytest.mark.parametrize("pattern, kw, want", [
    ("slurm-%j.out", {}, "slurm-42.out"),
    ("%x-%J.log", {}, "train-42.log"),
    ("%u/%x/%j", {}, "alice/train/42"),
    ("100%%-%j", {}, "100%-42"),
    ("%%j", {}, "%j"),
    ("%%%j", {}, "%42"),
    ("%A_%a.out", {"array_job_id": 40, "array_task_id": 7}, "40_7.out"),
    ("%A_%a.out", {}, "42_4294967294.out"),  # Slurm's NO_VAL outside an array
    ("%3a", {"array_job_id": 40, "array_task_id": 7}, "007"),
    ("%5j", {}, "00042"),
    ("%1j", {}, "42"),
    ("%12j", {}, "0000000042"),  # at most 10 wide
    ("%5x-%3u", {}, "train-alice"),  # no padding for names
    ("%N.out", {"node": "gpu01"}, "gpu01.out"),
    ("%N", {}, "localhost"),
    ("%n-%t-%s", {}, "0-0-batch"),
    ("odd-%z-%", {}, "odd-%z-%"),
    ("no\\%j", {}, "no%j"),  # a backslash turns expansion off
    ("a\\\\b-%j", {}, "a\\b-%j"),
    ("plain.txt", {}, "plain.txt"),
])
def test_expand_pattern(pattern, kw, want):
    assert expand_pattern(pattern, **JOB, **kw) == want


def test_expand_pattern_any_printable_name():
    assert expand_pattern("%x.out", job_id=1, name="my job * 100%", user="u") == "my job * 100%.out"


# ----------------------------------------------------------------------------- options and abbreviations
@pytest.mark.parametrize("words, want", [
    (["--job=x"], {"name": "x"}),
    (["--job-n", "x"], {"name": "x"}),
    (["--ou=o.txt"], {"output": "o.txt"}),
    (["--err", "e.txt"], {"error": "e.txt"}),
    (["--cpus-per-t=3"], {"cpus": 3}),
    (["--ch=/tmp"], {"chdir": "/tmp"}),
    (["--dep=singleton"], {"dependency": {"mode": "all", "items": [{"type": "singleton"}]}}),
    (["--beg=now"], {"begin": {"kind": "delay", "seconds": 0}}),
    (["--sig=USR2"], {"signal": {"signal": "USR2", "seconds": 60, "batch_only": False}}),
    (["--req"], {"requeue": True}),
    (["--no-r"], {"requeue": False}),
    (["--ho"], {"hold": True}),
    (["--mem=1G"], {"mem": "1g"}),  # exact beats the longer --mem-per-cpu, --mem-bind...
    (["--gres=gpu:1"], {"gpus": 1}),  # exact beats --gres-flags
    (["--time=5"], {"time": "0:05:00"}),  # exact beats --time-min
    (["--cpus=2"], {"cpus": 2}),  # ds01q's own, exact
])
def test_abbreviations(words, want):
    assert parse_options(words).options == want


@pytest.mark.parametrize("word, part", [
    ("--ti=5", "'--ti' is ambiguous: --time, --time-min"),
    ("--mem-per=1G", "is ambiguous: --mem-per-cpu, --mem-per-gpu"),
    ("--gpu=1", "is ambiguous"),
    ("--nod=1", "is ambiguous"),
    ("--ima=x", "unknown option '--ima'; did you mean --image?"),  # ds01q's own options are not abbreviated
])
def test_bad_abbreviations(word, part):
    assert part in one_line_error(parse_options, [word])


def test_ds01q_options_are_not_prefixes():
    """--mi is sbatch's --mincpus (its only sbatch option starting with "mi"), never ds01q's --mig."""
    p = parse_options(["--mi=4"])
    assert p.options == {} and p.warnings == ["--mincpus=4 ignored: it has no meaning on a single ds01q server"]


def test_short_options_cluster_and_attach():
    p = parse_options(["-HJname", "-c4", "-t", "10", "-N1"])
    assert p.options == {"hold": True, "name": "name", "cpus": 4, "time": "0:10:00"}
    assert p.warnings == ["--nodes=1 ignored: a ds01q job always runs on one node"]


def test_a_required_value_may_start_with_a_dash():
    assert parse_options(["-J", "-weird-"]).options == {"name": "-weird-"}


def test_args_after_the_first_non_option():
    p = parse_options(["-c", "2", "train.sh", "-c", "9", "--lr=3"])
    assert p.options == {"cpus": 2} and p.args == ["train.sh", "-c", "9", "--lr=3"]
    p = parse_options(["--hold", "--", "--not-an-option"])
    assert p.options == {"hold": True} and p.args == ["--not-an-option"]
    assert isinstance(p, Parsed)


def test_nice():
    assert parse_options(["--nice"]).options == {"nice": 100}  # sbatch's default adjustment
    assert parse_options(["--nice=7"]).options == {"nice": 7}
    assert parse_directives("#DS01Q --nice 10\n") == {"nice": 10}
    assert "only an admin" in one_line_error(parse_options, ["--nice=-5"])


def test_value_errors_name_the_option_and_line():
    msg = one_line_error(parse_directives, "#SBATCH -J ok\n#SBATCH --cpus-per-task=zero\n")
    assert msg.startswith("script line 2: --cpus-per-task: 'zero'")


def test_unknown_option_values_are_not_reported_as_options():
    msg = one_line_error(parse_directives, "#SBATCH -w node1 --chdir DIR -p gpu --bogus val\n")
    assert "unknown option '--bogus'" in msg
    assert "node1" not in msg and "DIR" not in msg and "val" not in msg


@pytest.mark.parametrize("text, part", [
    ("#DS01Q --colour red\n", "unknown option '--colour'"),
    ("#SBATCH --hold=yes\n", "--hold takes no value"),
    ("#SBATCH -t\n", "--time needs a value"),
    ("#SBATCH --time\n#SBATCH 10\n", "--time needs a value"),  # a value stays on its own line
    ("#SBATCH gpu\n", "'gpu' is not an option"),
    ("#SBATCH -p gpu extra\n", "'extra' is not an option"),
    ("#SBATCH --uid=0\n", "--uid cannot be honoured"),
    ("#SBATCH --gpus-per-socket=1\n", "--gpus-per-socket cannot be honoured: use --gpus"),
    ("#SBATCH --help\n", "--help cannot be honoured: it is not a job option"),
    ("#SBATCH --job-name=\n", "printable"),
    ("#SBATCH --job-name=a\tb\n", "'b' is not an option"),
    ("#SBATCH --open-mode=sometimes\n", "append or truncate"),
    ("#DS01Q --env NOEQUALS\n", "is not KEY=VALUE"),
    ("#DS01Q --cpus 0\n", "number of CPUs"),
    ("#DS01Q --gpu-mem lots\n", "not a size"),
    ("#SBATCH --nodes=2-4\n", "cannot be honoured on one server"),
    ("#SBATCH --nodes=x\n", "not a node count"),
    ("#SBATCH packjob\n", "heterogeneous"),
])
def test_errors(text, part):
    assert part in one_line_error(read_directives, text)


# ----------------------------------------------------------------------------- warnings
@pytest.mark.parametrize("word, shown", [
    ("--partition=gpu", "--partition=gpu ignored"), ("-p gpu", "--partition=gpu ignored"),
    ("-A lab", "--account=lab ignored"), ("--qos=high", "--qos=high ignored"), ("-q high", "--qos=high ignored"),
    ("-w node[1-2]", "--nodelist=node[1-2] ignored"), ("-C volta", "--constraint=volta ignored"),
    ("--reservation=r1", "--reservation=r1 ignored"), ("--exclusive", "--exclusive ignored"),
    ("--exclusive=user", "--exclusive=user ignored"), ("-N 1", "--nodes=1 ignored"), ("-N 1-1", "--nodes=1-1 ignored"),
    ("-n 1", "--ntasks=1 ignored"), ("--ntasks-per-node=1", "--ntasks-per-node=1 ignored"),
    ("--wait", "--wait ignored: use `ds01q submit --wait`"), ("-k", "--no-kill ignored"),
    ("--comment=hello", "--comment=hello ignored"), ("--licenses=matlab", "--licenses=matlab ignored"),
])
def test_cluster_options_warn(word, shown):
    p = read_directives(f"#SBATCH {word}\n")
    assert p.options == {}
    assert len(p.warnings) == 1 and p.warnings[0].startswith("script line 1: " + shown)


def test_directives_after_the_first_command_are_ignored_with_a_warning():
    p = read_directives("#!/bin/sh\n#SBATCH -c 1\n\necho hi\n#SBATCH -c 8\n#DS01Q --gpus 4\n")
    assert p.options == {"cpus": 1}
    assert p.warnings == [("script line 5: directive after the first command (line 4) ignored (and 1 more), as "
                           "sbatch ignores it")]


def test_no_warnings_for_plain_scripts():
    assert read_directives("#!/bin/bash\n#SBATCH -J a -t 5 -c 2 --mem=1G --gres=gpu:1\npython x.py\n").warnings == []


# ----------------------------------------------------------------------------- splitting a directive line
@pytest.mark.parametrize("rest, words", [
    (' --job-name="my job" -t 5 # a comment', ["--job-name=my job", "-t", "5"]),
    (" --job-name=a#b -t 5", ["--job-name=a"]),
    (" -J '#1'", ["-J", "#1"]),
    (" -J \\#1 -t 2", ["-J", "#1", "-t", "2"]),
    (' -J "a\\"b"', ["-J", 'a"b']),
    (" -J x'y z'w", ["-J", "xy zw"]),
    ("", []),
    ("   ", []),
    ("\t-c\t2", ["-c", "2"]),
    ('# everything here is a comment -c 2', []),
    (' -J ""', ["-J", ""]),
])
def test_split_directive(rest, words):
    assert split_directive(rest) == words


def test_line_rules():
    # not in column 0, commented out, or another case: plain comments, which do not end the directives
    text = "#!/bin/sh\n  #SBATCH -c 9\n##SBATCH -c 9\n#sbatch -c 9\n# note\n\n#SBATCH -c 2\n"
    assert parse_directives(text) == {"cpus": 2}
    assert parse_directives("#SBATCH -c 2\n   \n\t\n#SBATCH -t 5\n") == {"cpus": 2, "time": "0:05:00"}
    assert parse_directives("") == {}
    assert "DOS line breaks" in one_line_error(parse_directives, "#SBATCH -c 2\r\necho\r\n")


# ----------------------------------------------------------------------------- the module stays pure
@pytest.mark.parametrize("module", [directives, sbatch_options, sbatch_reader, slurm_values, leaf_values])
def test_imports_only_errors_units_and_the_standard_library(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    allowed = {"ds01q.errors", "ds01q.units", "ds01q.client", "ds01q.client.slurm_values", "ds01q.slurm_values",
               "ds01q.client.sbatch_options", "ds01q.client.sbatch_reader"}
    assert all(n in allowed or n.split(".")[0] in sys.stdlib_module_names for n in names), names
