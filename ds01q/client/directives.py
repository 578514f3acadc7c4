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
from typing import Any

import ds01q.slurm_values as sv
from ds01q.client.sbatch_options import ALLOWED, BY_LONG, BY_SHORT, NO_ARG, REQUIRED, SLURM_BY_LONG, Option, Parsed
from ds01q.client.sbatch_reader import INT, Reader
from ds01q.slurm_values import expand_pattern
from ds01q.errors import RequestError

__all__ = ["Option", "Parsed", "expand_pattern", "gres", "parse_directives", "parse_options", "read_directives",
           "split_directive"]

MAGIC = ("#SBATCH", "#DS01Q")


# ----------------------------------------------------------------------------- words → options
def _long(name: str, where: str) -> Option:
    if name in BY_LONG:
        return BY_LONG[name]
    hits = [o for n, o in SLURM_BY_LONG.items() if name and n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise RequestError(f"{where}option '--{name}' is ambiguous: {', '.join('--' + o.name for o in hits)}")
    near = difflib.get_close_matches(name, list(BY_LONG), n=1)
    hint = f"; did you mean --{near[0]}?" if near else ""
    raise RequestError(f"{where}unknown option '--{name}'{hint} ({ALLOWED})")


def _value(words: list[str], i: int, opt: Option, where: str) -> str:
    if i >= len(words):
        raise RequestError(f"{where}--{opt.name} needs a value")
    return words[i]


def _read_words(words: list[str], where: str, reader: Reader) -> list[str]:
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
            elif opt.name == "nice" and not eq and i + 1 < len(words) and INT.match(words[i + 1]):
                i += 1  # ds01q's --nice N, besides sbatch's --nice[=N]
                val = words[i]
            reader.apply(opt, val, where)
        elif word.startswith("-") and len(word) > 1:
            for j, letter in enumerate(word[1:], 1):
                short = BY_SHORT.get(letter)
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
    reader = Reader()
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
    reader = Reader()
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
