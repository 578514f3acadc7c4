import pytest

from ds01q.errors import RequestError
from ds01q.client.directives import parse_directives
from ds01q.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("24h", 86400), ("2d", 172800), ("90s", 90),
                                           ("1-00:00:00", 86400), ("02:30:00", 9000), ("10", 600), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["24 hours", "", "h", "-3m", "1:2:3:4", True])
def test_bad_durations(text):
    assert parse_duration(text) is None


@pytest.mark.parametrize("text, size", [("512m", 512 * 2**20), ("32g", 32 * 2**30), ("1.5G", int(1.5 * 2**30)),
                                        ("4096", 4096), ("10gb", 10 * 2**30)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_format_duration():
    assert format_duration(86400) == "1d" and format_duration(1800) == "30m" and format_duration(None) == "unlimited"


def test_directives_sbatch_and_ds01q():
    script = "#!/bin/sh\n#SBATCH --job-name=train -t 2:00:00\n#SBATCH --partition gpu\n#DS01Q --mig 2g.10gb --mem 8g\n" \
             "#SBATCH --gres=gpu:3g.20gb:1\necho hi\n#DS01Q --gpus 4\n"
    d = parse_directives(script)
    assert d == {"name": "train", "time": "2:00:00", "mig": "3g.20gb", "mem": "8g"}


def test_directive_gres_count():
    assert parse_directives("#SBATCH --gres=gpu:2\n") == {"gpus": 2}


def test_unknown_ds01q_directive_is_refused():
    with pytest.raises(RequestError, match="unknown option '--colour'"):
        parse_directives("#DS01Q --colour red\n")
