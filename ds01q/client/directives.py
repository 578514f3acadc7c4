"""Job options from a script's ``#SBATCH`` and ``#DS01Q`` lines, read as sbatch reads them. Pure: no I/O.

Lines. A directive is a line that starts in column 0 with ``#SBATCH`` or ``#DS01Q``. Reading stops at the
first command, a line that is neither blank nor a comment (blanks, then ``#``); blank lines and other
comments between directives are fine. Directives after the first command are ignored, as sbatch ignores
them (with a warning here). A script with DOS line breaks is refused, as sbatch refuses it.

Words (sbatch's ``_get_argument``). Blanks separate words. '…' and "…" quote and are removed, also
mid-word (``--job-name="my job"``). A backslash takes the next character literally. An unquoted,
unescaped ``#`` starts a comment that runs to the end of the line.

Options. sbatch's options, with getopt_long's rules: ``--opt=value``, or ``--opt value`` when a value is
required; a unique prefix of a long name (``--part`` for ``--partition``); short options that cluster
(``-c4``, ``-c 4``, ``-HQ``). ds01q's own options, spelled in full: ``--mig``, ``--gpu-mem``, ``--cpus``,
``--image``, ``--name``, ``--env KEY=VALUE``, and ``--nice N`` (``-e`` stays sbatch's --error). Both kinds
of line take all of them, and a later option overrides an earlier one (Slurm adds up --mail-type). The
time also takes ds01q's 30m/24h/2d. Unknown, ambiguous and malformed options are one-line errors that
name the line. Options with no meaning on one server (``--partition``, ``--account``, ``--qos``,
``--nodelist``, ``--constraint``, ``--nodes=1``, ``--ntasks=1``, …) are accepted with a warning; requests
one server cannot honour (``--nodes=2``, ``--ntasks=4``) are errors.

Keys of ``Parsed.options`` (the submit request; the server reads name, time, gpus, mig, gpu_mem, cpus,
mem, image, nice, hold, output, env and requeue today, and ignores the rest until it learns them):

    name        str        --job-name/-J, --name (any printable characters)
    time        str        --time/-t as "H:MM:SS" or "D-HH:MM:SS" (ds01q.units.parse_duration reads it),
                           rounded up to whole minutes as in Slurm; UNLIMITED, INFINITE and 0 leave it out
                           with a warning, so the group's maximum run time applies
    gpus        int        --gpus/-G, --gpus-per-node, --gpus-per-task, --gres=gpu[:MODEL][:N]
    gpu_model   str        MODEL of the above when one is named (a100, h100, …)
    mig         str        one MIG slice: --mig P, --gres=gpu:P[:1], --gpus=P:1 (P like 2g.10gb)
    gpu_mem     str        --gpu-mem SIZE
    cpus        int|float  --cpus-per-task/-c, --cpus-per-gpu × GPUs, --cpus
    mem         str        "Nm"/"Ng"/"Nt" from --mem, --mem-per-cpu × CPUs or --mem-per-gpu × GPUs (sizes as
                           Slurm: K/M/G/T, a bare number is MiB); --mem=0 ("all memory") is left out with a
                           warning, so the group's default applies
    image str, nice int, hold True, output str, error str, chdir str ("none" → "/dev/null" for output and
    error; %-patterns are kept and expanded later by ``expand_pattern``), requeue bool (--requeue,
    --no-requeue), open_mode "append"|"truncate", mail_user str
    mail_type   list[str]  ["BEGIN", "END", …]
    env         dict       VAR=value from --export and from #DS01Q --env
    export      dict       {"mode": "ALL"|"NONE"|"NIL", "names": [VAR taken from the submitter's env]}
    array       dict       {"indices": [0, 1, …], "throttle": N or None}
    dependency  dict       {"mode": "all"|"any", "items": [{"type": "afterok", "jobs": [{"id": 12}]}, …]}
    begin       dict       {"kind": "delay", "seconds": N} | {"kind": "time", "time": "HH:MM:SS"}
                           | {"kind": "date", "at": "YYYY-MM-DDTHH:MM:SS"}
    signal      dict       {"signal": "USR1", "seconds": 60, "batch_only": bool}
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import ds01q.slurm_values as sv
from ds01q.slurm_values import expand_pattern
from ds01q.errors import RequestError
from ds01q.units import parse_size

__all__ = ["Option", "Parsed", "expand_pattern", "gres", "parse_directives", "parse_options", "read_directives",
           "split_directive"]

MAGIC = ("#SBATCH", "#DS01Q")
NO_ARG, REQUIRED, OPTIONAL = 0, 1, 2


@dataclass(frozen=True)
class Option:
    name: str  # long name, without the dashes
    short: str  # one letter, or ""
    arg: int  # NO_ARG, REQUIRED or OPTIONAL (then only as --opt=value or -xVALUE)
    action: str  # a _Reader.opt_* method, "ignore" (warning) or "refuse" (error)


@dataclass
class Parsed:
    """What a set of options asks for: ``options`` (keys above), ``warnings`` (one line each, for the user)
    and, for a command line, ``args``: the words from the first one that is not an option."""

    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)


def _opts(arg: int, action: str, *names: str) -> list[Option]:
    """Options from "long" or "long/S" (S: the short letter)."""
    return [Option(n.split("/")[0], n.partition("/")[2], arg, action) for n in names]


_R, _N, _O = REQUIRED, NO_ARG, OPTIONAL
SLURM_OPTIONS: tuple[Option, ...] = tuple(
    # honoured
    _opts(_R, "array", "array/a") + _opts(_R, "begin", "begin/b") + _opts(_R, "chdir", "chdir/D")
    + _opts(_R, "cpus_per_gpu", "cpus-per-gpu") + _opts(_R, "cpus_per_task", "cpus-per-task/c")
    + _opts(_R, "dependency", "dependency/d") + _opts(_R, "error", "error/e") + _opts(_R, "export", "export")
    + _opts(_R, "gpus", "gpus/G", "gpus-per-node", "gpus-per-task") + _opts(_R, "gres", "gres")
    + _opts(_N, "hold", "hold/H") + _opts(_R, "name", "job-name/J") + _opts(_R, "mail_type", "mail-type")
    + _opts(_R, "mail_user", "mail-user") + _opts(_R, "mem", "mem") + _opts(_R, "mem_per_cpu", "mem-per-cpu")
    + _opts(_R, "mem_per_gpu", "mem-per-gpu") + _opts(_O, "nice", "nice") + _opts(_N, "no_requeue", "no-requeue")
    + _opts(_R, "nodes", "nodes/N") + _opts(_R, "ntasks", "ntasks/n", "ntasks-per-node")
    + _opts(_R, "open_mode", "open-mode") + _opts(_R, "output", "output/o") + _opts(_N, "requeue", "requeue")
    + _opts(_R, "signal", "signal") + _opts(_R, "time", "time/t")
    # no meaning on one server: a warning
    + _opts(_R, "ignore", "account/A", "acctg-freq", "batch", "cluster-constraint", "clusters/M", "comment",
            "constraint/C", "core-spec/S", "cores-per-socket", "cpu-freq", "deadline", "delay-boot",
            "distribution/m", "exclude/x", "extra", "extra-node-info/B", "gpu-bind", "gpu-freq", "gres-flags",
            "hint", "input/i", "kill-on-invalid-dep", "licenses/L", "mcs-label", "mem-bind", "mincpus",
            "network", "nodefile/F", "nodelist/w", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-socket",
            "partition/p", "power", "prefer", "priority", "profile", "qos/q", "reservation", "segment",
            "sockets-per-node", "switches", "thread-spec", "threads-per-core", "time-min", "tmp", "tres-bind",
            "wait-all-nodes", "wckey")
    + _opts(_N, "ignore", "contiguous", "ignore-pbs", "overcommit/O", "oversubscribe/s", "parsable", "quiet/Q",
            "reboot", "spread-job", "stepmgr", "use-min-nodes", "verbose/v", "wait/W")
    + _opts(_O, "ignore", "exclusive", "get-user-env", "no-kill/k", "oom-kill-step", "propagate")
    # cannot be honoured: an error
    + _opts(_R, "refuse", "bb", "bbf", "container", "container-id", "export-file", "gid", "gpus-per-socket",
            "tres-per-task", "uid", "wrap")
    + _opts(_N, "refuse", "help/h", "test-only", "usage/u", "version/V")
)
DS01Q_OPTIONS: tuple[Option, ...] = tuple(
    _opts(_R, "mig", "mig") + _opts(_R, "gpu_mem", "gpu-mem") + _opts(_R, "cpus", "cpus") + _opts(_R, "image", "image")
    + _opts(_R, "name", "name") + _opts(_R, "env", "env"))
_SLURM_BY_LONG = {o.name: o for o in SLURM_OPTIONS}
_BY_LONG = {**_SLURM_BY_LONG, **{o.name: o for o in DS01Q_OPTIONS}}
_BY_SHORT = {o.short: o for o in SLURM_OPTIONS if o.short}
ALLOWED = "allowed: sbatch's options, and ds01q's --mig, --gpu-mem, --cpus, --image, --name, --env"

ONE_SERVER = "it has no meaning on a single ds01q server"
IGNORED_WHY = {
    "wait": "use `ds01q submit --wait`", "parsable": "it changes only sbatch's own messages",
    "quiet": "it changes only sbatch's own messages", "verbose": "it changes only sbatch's own messages",
    "input": "batch jobs read no standard input", "priority": "an admin sets priorities (ds01q admin priority)",
    "deadline": "ds01q does not cancel jobs by deadline", "time-min": "ds01q schedules by --time only",
    "exclusive": "every job gets its own slices and container", "comment": "ds01q keeps no job comments",
    "kill-on-invalid-dep": "ds01q keeps such jobs pending (reason DependencyNeverSatisfied)",
}
REFUSED_WHY = {
    "wrap": "give ds01q submit a script", "test-only": "ds01q has no test-only submit",
    "help": "it is not a job option", "usage": "it is not a job option", "version": "it is not a job option",
    "uid": "jobs run as the user who submits them", "gid": "jobs run as the user who submits them",
    "bb": "ds01q has no burst buffers", "bbf": "ds01q has no burst buffers",
    "container": "ds01q runs jobs in images: use --image", "container-id": "ds01q runs jobs in images: use --image",
    "export-file": "use --export=VAR=value,...", "gpus-per-socket": "use --gpus",
    "tres-per-task": "use --cpus-per-task and --gpus-per-task",
}
_INT = re.compile(r"^[+-]?\d{1,9}$")


def _whole(value: str, least: int = 1) -> int:
    if not _INT.match(value.strip()) or int(value) < least:
        raise RequestError(f"{value!r} is not a whole number of at least {least}")
    return int(value)


class _Reader:
    """Applies options in order (``apply``), then resolves per-CPU and per-GPU amounts (``finish``)."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.gpu: dict[str, Any] | None = None
        self.cpus: tuple[str, float, str, str] | None = None  # (how, amount, where, as written)
        self.mem: tuple[str, int, str, str] | None = None
        self.export_env: dict[str, str] = {}
        self.env: dict[str, str] = {}

    def apply(self, opt: Option, value: str | None, where: str) -> None:
        shown = f"--{opt.name}" + ("" if value is None else f"={value}")
        if opt.action == "ignore":
            self.warnings.append(f"{where}{shown} ignored: {IGNORED_WHY.get(opt.name, ONE_SERVER)}")
            return
        if opt.action == "refuse":
            raise RequestError(f"{where}--{opt.name} cannot be honoured: {REFUSED_WHY[opt.name]}")
        try:
            getattr(self, "opt_" + opt.action)(value, where, shown)
        except RequestError as e:
            raise RequestError(f"{where}--{opt.name}: {e}") from None

    # ------------------------------------------------------------ one option each
    def opt_name(self, v: str, where: str, shown: str) -> None:
        if not v or not v.isprintable():
            raise RequestError(f"{v!r}: a job name is one or more printable characters")
        self.out["name"] = v

    def opt_time(self, v: str, where: str, shown: str) -> None:
        secs = sv.parse_time_limit(v)
        if secs is None:
            self.out.pop("time", None)
            self.warnings.append(f"{where}{shown}: ds01q has no unlimited jobs; the group's maximum run time applies")
        else:
            self.out["time"] = sv.format_time(secs)

    def opt_gres(self, v: str, where: str, shown: str) -> None:
        self.gpu = sv.parse_gres(v)

    def opt_gpus(self, v: str, where: str, shown: str) -> None:
        self.gpu = sv.parse_gpus(v)

    def opt_mig(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs a MIG profile (like 1g.10gb, 2g.10gb, 3g.20gb)")
        self.gpu = {"mig": v}  # the server checks it against the profiles it knows

    def opt_gpu_mem(self, v: str, where: str, shown: str) -> None:
        size = parse_size(v)
        if size is None or size <= 0:
            raise RequestError(f"{v!r} is not a size like 10g or 512m")
        self.gpu = {"gpu_mem": v}

    def opt_cpus_per_task(self, v: str, where: str, shown: str) -> None:
        self.cpus = ("cpus", _whole(v), where, shown)

    def opt_cpus_per_gpu(self, v: str, where: str, shown: str) -> None:
        self.cpus = ("per_gpu", _whole(v), where, shown)

    def opt_cpus(self, v: str, where: str, shown: str) -> None:
        try:
            n = float(v)
        except ValueError:
            n = -1.0
        if not 0 < n <= 1024:
            raise RequestError(f"{v!r} is not a number of CPUs from 0.01 to 1024")
        self.cpus = ("cpus", int(n) if n.is_integer() else n, where, shown)

    def opt_mem(self, v: str, where: str, shown: str) -> None:
        self.mem = ("mem", sv.parse_mbytes(v), where, shown)

    def opt_mem_per_cpu(self, v: str, where: str, shown: str) -> None:
        self.mem = ("per_cpu", sv.parse_mbytes(v), where, shown)

    def opt_mem_per_gpu(self, v: str, where: str, shown: str) -> None:
        self.mem = ("per_gpu", sv.parse_mbytes(v), where, shown)

    def opt_output(self, v: str, where: str, shown: str, key: str = "output") -> None:
        if not v:
            raise RequestError("needs a file name (patterns like slurm-%j.out are fine)")
        self.out[key] = "/dev/null" if v.lower() == "none" else v

    def opt_error(self, v: str, where: str, shown: str) -> None:
        self.opt_output(v, where, shown, key="error")

    def opt_chdir(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs a directory")
        self.out["chdir"] = v

    def opt_image(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs an image name")
        self.out["image"] = v

    def opt_nice(self, v: str | None, where: str, shown: str) -> None:
        n = 100 if v is None else _whole(v, least=-(2**31))
        if n < 0:
            raise RequestError(f"{v!r}: a negative nice raises priority, which only an admin may do (use 0 or more)")
        self.out["nice"] = n

    def opt_hold(self, v: None, where: str, shown: str) -> None:
        self.out["hold"] = True

    def opt_requeue(self, v: None, where: str, shown: str) -> None:
        self.out["requeue"] = True

    def opt_no_requeue(self, v: None, where: str, shown: str) -> None:
        self.out["requeue"] = False

    def opt_open_mode(self, v: str, where: str, shown: str) -> None:
        if v.lower() not in ("append", "truncate"):
            raise RequestError(f"{v!r} is not append or truncate")
        self.out["open_mode"] = v.lower()

    def opt_array(self, v: str, where: str, shown: str) -> None:
        self.out["array"] = sv.parse_array(v)

    def opt_dependency(self, v: str, where: str, shown: str) -> None:
        self.out["dependency"] = sv.parse_dependency(v)

    def opt_begin(self, v: str, where: str, shown: str) -> None:
        self.out["begin"] = sv.parse_begin(v)

    def opt_signal(self, v: str, where: str, shown: str) -> None:
        sig = sv.parse_signal(v)
        if sig.pop("reservation", False):
            self.warnings.append(f"{where}{shown}: R (signal at the reservation's end) ignored: {ONE_SERVER}")
        self.out["signal"] = sig

    def opt_export(self, v: str, where: str, shown: str) -> None:
        self.out["export"], self.export_env = sv.parse_export(v)

    def opt_env(self, v: str, where: str, shown: str) -> None:
        key, sep, val = v.partition("=")
        if not sep:
            raise RequestError(f"{v!r} is not KEY=VALUE")
        self.env[sv.env_name(key, v)] = val

    def opt_mail_type(self, v: str, where: str, shown: str) -> None:
        types = self.out.setdefault("mail_type", [])  # Slurm adds mail types up over options
        types.extend(t for t in sv.parse_mail_types(v) if t not in types)

    def opt_mail_user(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs an address")
        self.out["mail_user"] = v

    def opt_nodes(self, v: str, where: str, shown: str) -> None:
        m = re.match(r"^(\d{1,6})(?:-(\d{1,6}))?$", v)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise RequestError(f"{v!r} is not a node count (N or MIN-MAX)")
        if int(m.group(1)) > 1:
            raise RequestError(f"{v} nodes cannot be honoured on one server (use --nodes=1)")
        self.warnings.append(f"{where}{shown} ignored: a ds01q job always runs on one node")

    def opt_ntasks(self, v: str, where: str, shown: str) -> None:
        if _whole(v) > 1:
            raise RequestError(f"{v} tasks cannot be honoured on one server: ds01q runs the script once, as one "
                               "task (ask for CPUs with --cpus-per-task)")
        self.warnings.append(f"{where}{shown} ignored: a ds01q job is always one task")

    # ------------------------------------------------------------ per-CPU and per-GPU amounts
    def _gpu_count(self, where: str, shown: str) -> int:
        if self.gpu is None:
            self.warnings.append(f"{where}{shown}: no GPU option, so one GPU (the group's default request) is "
                                 "assumed")
            return 1
        if "gpus" in self.gpu:
            if self.gpu["gpus"] == 0:
                raise RequestError(f"{where}{shown}: the job asks for no GPUs (--gpus=0), so there is nothing to "
                                   "multiply by; use --mem or --cpus-per-task")
            return int(self.gpu["gpus"])
        return 1  # one MIG slice, or one slice with --gpu-mem

    def finish(self) -> Parsed:
        out = dict(self.out)
        if self.gpu is not None:
            out.update(self.gpu)
        cpus: float | None = None
        if self.cpus is not None:
            how, amount, where, shown = self.cpus
            cpus = amount if how == "cpus" else amount * self._gpu_count(where, shown)
            out["cpus"] = cpus
        if self.mem is not None:
            how, mib, where, shown = self.mem
            if how == "per_gpu":
                mib *= self._gpu_count(where, shown)
            elif how == "per_cpu":
                if cpus is None and mib:
                    self.warnings.append(f"{where}{shown}: no CPU count, so 1 CPU is assumed (as in Slurm)")
                mib = math.ceil(mib * (cpus or 1))
            if mib:
                out["mem"] = sv.format_mbytes(mib)
            else:
                self.warnings.append(f"{where}{shown}: Slurm's 'all the memory' is no memory limit here; the "
                                     "group's default applies")
        env = {**self.export_env, **self.env}
        if env:
            out["env"] = env
        return Parsed(options=out, warnings=list(self.warnings))


# ----------------------------------------------------------------------------- words → options
def _long(name: str, where: str) -> Option:
    if name in _BY_LONG:
        return _BY_LONG[name]
    hits = [o for n, o in _SLURM_BY_LONG.items() if name and n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise RequestError(f"{where}option '--{name}' is ambiguous: {', '.join('--' + o.name for o in hits)}")
    near = difflib.get_close_matches(name, list(_BY_LONG), n=1)
    hint = f"; did you mean --{near[0]}?" if near else ""
    raise RequestError(f"{where}unknown option '--{name}'{hint} ({ALLOWED})")


def _value(words: list[str], i: int, opt: Option, where: str) -> str:
    if i >= len(words):
        raise RequestError(f"{where}--{opt.name} needs a value")
    return words[i]


def _read_words(words: list[str], where: str, reader: _Reader) -> list[str]:
    """Apply the options among ``words``; return the words from the first non-option on (after ``--``)."""
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return words[i + 1:]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            opt = _long(name, where)
            val: str | None = value if eq else None
            if opt.arg == NO_ARG and eq:
                raise RequestError(f"{where}--{opt.name} takes no value (got {word!r})")
            if opt.arg == REQUIRED and not eq:
                i += 1
                val = _value(words, i, opt, where)
            elif opt.name == "nice" and not eq and i + 1 < len(words) and _INT.match(words[i + 1]):
                i += 1  # ds01q's --nice N, besides sbatch's --nice[=N]
                val = words[i]
            reader.apply(opt, val, where)
        elif word.startswith("-") and len(word) > 1:
            for j, letter in enumerate(word[1:], 1):
                short = _BY_SHORT.get(letter)
                if short is None:
                    inside = f" in {word!r}" if len(word) > 2 else ""
                    raise RequestError(f"{where}unknown option '-{letter}'{inside} ({ALLOWED})")
                if short.arg == NO_ARG:
                    reader.apply(short, None, where)
                    continue
                val = word[j + 1:] or None
                if val is None and short.arg == REQUIRED:
                    i += 1
                    val = _value(words, i, short, where)
                reader.apply(short, val, where)
                break
        else:
            return words[i:]
        i += 1
    return []


def parse_options(words: list[str]) -> Parsed:
    """sbatch-style options from a list of words (a command line, or one directive line split with
    ``split_directive``). ``args`` holds the words from the first non-option on, as getopt's ``+`` mode."""
    reader = _Reader()
    args = _read_words(list(words), "", reader)
    parsed = reader.finish()
    parsed.args = args
    return parsed


# ----------------------------------------------------------------------------- script → words
def split_directive(rest: str, where: str = "") -> list[str]:
    """The words of a directive after its ``#SBATCH``/``#DS01Q``, split as sbatch splits them."""
    words: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i].isspace():
            i += 1
        if i >= n:
            break
        buf: list[str] = []
        quote, escaped, comment = "", False, False
        while i < n and (quote or not rest[i].isspace()):
            c = rest[i]
            i += 1
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
                continue
            elif quote:
                if c == quote:
                    quote = ""
                    continue
            elif c in "\"'":
                quote = c
                continue
            elif c == "#":
                comment = True
                break
            buf.append(c)
        if quote:
            raise RequestError(f"{where}unmatched {quote} in {rest.strip()!r}")
        if buf or not comment:
            words.append("".join(buf))
        if comment:
            break
    return words


def _magic(line: str) -> str | None:
    return next((m for m in MAGIC if line.startswith(m)), None)


def read_directives(text: str) -> Parsed:
    """The options of a script's directives, with warnings (see the module docstring)."""
    if "\r\n" in text:
        raise RequestError("the script has DOS line breaks (\\r\\n); convert it with dos2unix (sbatch refuses it too)")
    reader = _Reader()
    lines = text.split("\n")
    first_command = 0
    for lineno, line in enumerate(lines, 1):
        magic = _magic(line)
        if magic is None:
            if line.strip() and not line.lstrip().startswith("#"):
                first_command = lineno
                break
            continue
        where = f"script line {lineno}: "
        words = split_directive(line[len(magic):], where)
        if words and words[0].lower() in ("hetjob", "packjob"):
            raise RequestError(f"{where}heterogeneous jobs (hetjob) cannot be honoured on one server")
        rest = _read_words(words, where, reader)
        if rest:
            raise RequestError(f"{where}{rest[0]!r} is not an option (a {magic} line holds only options; {ALLOWED})")
    parsed = reader.finish()
    late = [n for n, line in enumerate(lines[first_command:], first_command + 1) if first_command and _magic(line)]
    if late:
        more = f" (and {len(late) - 1} more)" if len(late) > 1 else ""
        parsed.warnings.append(f"script line {late[0]}: directive after the first command (line {first_command}) "
                               f"ignored{more}, as sbatch ignores it")
    return parsed


def parse_directives(text: str) -> dict[str, Any]:
    """The submit options of a script's ``#SBATCH``/``#DS01Q`` lines (``read_directives(text).options``)."""
    return read_directives(text).options


def gres(value: str) -> dict[str, Any]:
    """Slurm's --gres=gpu[:TYPE][:N]: ``{"gpus": N}``, ``{"gpus": N, "gpu_model": TYPE}`` or ``{"mig": TYPE}``."""
    try:
        return sv.parse_gres(value)
    except RequestError as e:
        raise RequestError(f"--gres: {e}") from None
