"""ds01-infra's resource-limits.yaml (a real lab's file, tests/fixtures/ds01-infra, MIT) loads as
ds01q config, with its members files, group overrides, user overrides and lifecycle exemptions."""
import shutil
import textwrap
from datetime import date
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ds01q import config, ds01infra
from ds01q.cli.importcmd import import_ds01
from ds01q.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "ds01-infra" / "resource-limits.yaml"
SHARED_FIXTURE = REPO.parent / "shared" / "fixtures" / "ds01-infra" / "resource-limits.yaml"

PHD = "204214@hertie-school.lan"  # an AD student-style name, moved to researcher by group-overrides.txt
STAFF = "first.last@hertie-school.lan"
GiB = 1024**3


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A ds01-infra config folder as a lab has it: the real resource-limits.yaml and its side files."""
    cfg = tmp_path / "config"
    cfg.mkdir()
    shutil.copy(FIXTURE, cfg / "resource-limits.yaml")
    write(cfg / "groups" / "student.members", f"""
        # filled by the daily /home scan
        {PHD}
        alice        # moved to faculty by group-overrides.txt
        dave
    """)
    write(cfg / "groups" / "researcher.members", f"""
        {STAFF}
        bob
    """)
    write(cfg / "groups" / "faculty.members", "prof\n")
    write(cfg / "groups" / "admin.members", "datasciencelab\n")
    write(cfg / "groups" / "archived.members", "gone@hertie-school.lan\n")
    write(cfg / "group-overrides.txt", f"""
        # username:group
        {PHD}:researcher     # PhD with a numeric ID
        alice:faculty
        carol:wizards        # no such group
    """)
    write(cfg / "user-overrides.yaml", f"""
        {PHD}:
          idle_timeout_h: null
          max_runtime_h: null
          container_hold_after_stop_h: null
        bob:
          max_mig_instances: 6
        erin:
          max_runtime_h: 96
    """)
    write(cfg / "lifecycle-exemptions.yaml", f"""
        exemptions:
          - username: "{PHD}"
            exempt_from: [idle_timeout_h, max_runtime_h]
            reason: continuous model training
            expires_on: null
          - username: bob
            exempt_from: [idle_timeout_h]
            expires_on: "2026-06-30T23:59:59Z"
          - username: old
            exempt_from: [max_runtime_h]
            expires_on: 2020-01-01
    """)
    return cfg / "resource-limits.yaml"


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------- the file as it is
def test_fixture_copy_is_the_shared_fixture():
    assert (FIXTURE.parent / "LICENSE").read_text().startswith("MIT License")
    if not SHARED_FIXTURE.is_file():
        pytest.skip(f"{SHARED_FIXTURE} is not checked out beside the repository")
    assert FIXTURE.read_bytes() == SHARED_FIXTURE.read_bytes()


@pytest.mark.parametrize("path", [FIXTURE, SHARED_FIXTURE], ids=["copy", "shared"])
def test_load_accepts_the_ds01infra_file_as_it_is(path):
    if not path.is_file():
        pytest.skip(f"{path} is not checked out beside the repository")
    cfg = config.load(str(path))
    assert cfg.inventory_source == "auto"
    assert cfg.default_group == "student"
    assert list(cfg.groups) == ["student", "researcher", "faculty", "admin"]

    student = cfg.groups["student"]
    assert student.limits.max_gpus == 2.0
    assert student.limits.max_slices_per_job == 2
    assert student.limits.max_running_jobs == 3  # from defaults.max_containers_per_user
    assert student.limits.max_runtime_s == 24 * 3600
    assert student.limits.allow_full_gpu is True
    assert student.idle_timeout_s == 30 * 60
    assert (student.cpus, student.mem_bytes, student.shm_bytes, student.pids_limit) == (32, 32 * GiB, 16 * GiB, 4096)

    researcher = cfg.groups["researcher"]
    assert researcher.limits.max_gpus == 4.0
    assert researcher.limits.max_slices_per_job == 3
    assert researcher.limits.max_running_jobs == 5
    assert researcher.limits.max_runtime_s == 48 * 3600
    assert researcher.idle_timeout_s == 3600
    assert (researcher.cpus, researcher.mem_bytes, researcher.shm_bytes) == (48, 64 * GiB, 32 * GiB)

    faculty = cfg.groups["faculty"]
    assert (faculty.limits.max_gpus, faculty.limits.max_slices_per_job) == (4.0, 4)
    assert (faculty.limits.max_runtime_s, faculty.idle_timeout_s) == (72 * 3600, 2 * 3600)

    admin = cfg.groups["admin"]
    assert admin.admin is True
    assert admin.limits.max_gpus is None  # max_gpu_equivalents: null = unlimited
    assert admin.limits.max_slices_per_job is None
    assert admin.limits.max_running_jobs == 10
    assert admin.unix_group == "ds01-admin"  # access_control.admin_group

    # No priorities in ds01-infra: ranked by tier.
    assert [cfg.groups[g].priority for g in ("admin", "faculty", "researcher", "student")] == [40, 30, 20, 10]
    assert cfg.admin_users == ("datasciencelab",)
    assert cfg.executor.stop_grace_s == 60  # policies.sigterm_grace_s
    assert cfg.group_of("someone-new").name == "student"


# ---------------------------------------------------------------- membership and overrides
def test_membership_from_members_files_and_group_overrides(lab):
    cfg = config.load(str(lab))
    assert cfg.group_of(PHD).name == "researcher"  # group-overrides.txt wins over student.members
    assert cfg.group_of("alice").name == "faculty"  # likewise
    assert cfg.group_of("dave").name == "student"
    assert cfg.group_of(STAFF).name == "researcher"
    assert cfg.group_of("bob").name == "researcher"
    assert cfg.group_of("prof").name == "faculty"
    assert cfg.group_of("datasciencelab").name == "admin"
    assert cfg.is_admin("datasciencelab", 1000)
    assert not cfg.is_admin(STAFF, 1000)
    assert cfg.group_of("carol").name == "student"  # overridden into a group that does not exist: default
    assert cfg.group_of("gone@hertie-school.lan").name == "student"  # archived.members is not a group


def test_user_override_keeps_the_group_limits_it_does_not_name(lab):
    cfg = config.load(str(lab))
    phd = cfg.limits_for(PHD)
    assert phd.max_runtime_s is None  # the override: max_runtime_h: null
    # Kept from researcher. ds01-infra gives an overridden user `defaults` + override, so this
    # user would fall to 1.0 GPU-equivalents, 1 slot per container and 3 containers.
    assert phd.max_gpus == 4.0
    assert phd.max_slices_per_job == 3
    assert phd.max_running_jobs == 5

    bob = cfg.limits_for("bob")
    assert bob.max_gpus == 6.0  # max_mig_instances, the legacy alias
    assert bob.max_runtime_s == 48 * 3600 and bob.max_slices_per_job == 3

    erin = cfg.limits_for("erin")  # in no members file: the default group, plus the override
    assert cfg.group_of("erin").name == "student"
    assert erin.max_runtime_s == 96 * 3600
    assert erin.max_gpus == 2.0 and erin.max_running_jobs == 3

    assert cfg.limits_for("dave") == cfg.groups["student"].limits


def test_user_entries_name_the_group_and_only_the_overridden_keys(lab):
    users = ds01infra.convert(raw(lab), lab.parent, today=date(2026, 3, 1))["users"]
    assert users[PHD] == {"group": "researcher", "max_runtime": None}
    assert users["bob"] == {"group": "researcher", "max_gpus": 6.0}
    assert users["alice"] == {"group": "faculty"}
    assert "carol" not in users


def test_lifecycle_exemptions_until_they_expire(lab):
    before = ds01infra.convert(raw(lab), lab.parent, today=date(2026, 6, 30))
    assert before["lifecycle"]["exempt_users"] == [PHD, "bob"]
    after = ds01infra.convert(raw(lab), lab.parent, today=date(2026, 7, 1))
    assert after["lifecycle"]["exempt_users"] == [PHD]
    assert PHD in config.load(str(lab)).lifecycle_exempt


def test_ds01infra_head_layout_runtime_folder(tmp_path):
    """ds01-infra HEAD keeps config/runtime/{resource-limits.yaml,groups/,user-overrides.yaml} and
    config/group-overrides.txt."""
    runtime = tmp_path / "config" / "runtime"
    runtime.mkdir(parents=True)
    shutil.copy(FIXTURE, runtime / "resource-limits.yaml")
    write(runtime / "groups" / "researcher.members", "r.one@hertie-school.lan\n")
    write(tmp_path / "config" / "group-overrides.txt", "w.lowe@hertie-school.lan:faculty\n")
    cfg = config.load(str(runtime / "resource-limits.yaml"))
    assert cfg.group_of("r.one@hertie-school.lan").name == "researcher"
    assert cfg.group_of("w.lowe@hertie-school.lan").name == "faculty"

    # The older layout with the members files one level down, under runtime/groups.
    older = tmp_path / "older"
    older.mkdir()
    shutil.copy(FIXTURE, older / "resource-limits.yaml")
    write(older / "runtime" / "groups" / "faculty.members", "prof\n")
    assert config.load(str(older / "resource-limits.yaml")).group_of("prof").name == "faculty"


# ---------------------------------------------------------------- key mapping
def test_aliases_hours_and_aggregate():
    data = {
        "defaults": {"max_mig_instances": 1, "max_mig_per_container": 1, "max_runtime_h": 1.5,
                     "idle_timeout": "45m", "max_containers_per_user": 2},
        "groups": {
            "student": {"idle_timeout_h": 0},
            "researcher": {"max_gpu_slots": 3, "max_runtime": "2d", "aggregate": {"gpu_limit": 2, "tasks_max": 9}},
            "lab": {"max_gpu_equivalents": 3.5, "max_mig_instances": 9, "max_runtime_h": 0.25},
        },
    }
    groups = ds01infra.convert(data, Path("/nonexistent"))["groups"]
    assert groups["student"]["max_gpus"] == 1.0
    assert groups["student"]["max_runtime"] == "90m"
    assert groups["student"]["idle_timeout"] is None  # 0 hours: no idle timeout, as in ds01-infra
    assert groups["researcher"]["max_gpus"] == 2.0  # the lower of max_gpu_slots 3 and aggregate.gpu_limit 2
    assert groups["researcher"]["max_runtime"] == "48h"
    assert groups["researcher"]["idle_timeout"] == "45m"
    assert groups["lab"]["max_gpus"] == 3.5  # the current name wins over the legacy alias
    assert groups["lab"]["max_runtime"] == "15m"
    assert groups["lab"]["priority"] == 10 and groups["researcher"]["priority"] == 20
    assert groups["lab"]["max_running_jobs"] == 2 and groups["lab"]["max_slices_per_job"] == 1
    # ds01-infra's built-in values where no layer sets a key
    assert (groups["lab"]["cpus"], groups["lab"]["mem"], groups["lab"]["shm_size"]) == (16, "32g", "16g")
    cfg = config.from_dict(ds01infra.convert(data, Path("/nonexistent")))
    assert cfg.groups["student"].limits.max_runtime_s == 5400


def test_group_aggregate_replaces_the_defaults_aggregate():
    data = {"defaults": {"max_gpu_equivalents": 4, "aggregate": {"gpu_limit": 1}},
            "groups": {"student": {}, "researcher": {"aggregate": {"memory_max": "9G"}}}}
    groups = ds01infra.convert(data, Path("/nonexistent"))["groups"]
    assert groups["student"]["max_gpus"] == 1.0  # inherits the defaults' aggregate
    assert groups["researcher"]["max_gpus"] == 4.0  # its own aggregate has no gpu_limit


def test_render_is_the_same_config_with_a_report(lab):
    data = raw(lab)
    text = ds01infra.render(data, lab.parent, today=date(2026, 3, 1), source="resource-limits.yaml")
    header = text.split("\n\n", 1)[0]
    assert all(line.startswith("#") for line in header.splitlines())
    mapped = header.split("# Mapped:")[1].split("# Ignored:")[0]
    ignored = header.split("# Ignored:")[1]
    assert "max_gpu_equivalents -> max_gpus" in mapped
    assert "max_containers_per_user -> max_running_jobs" in mapped
    assert "memory_swap: ds01q sets memory-swap = memory" in ignored
    assert "aggregate.cpu_quota" in ignored and "container_types" in ignored
    assert f"idle_timeout_h: ds01q sets this per group, not per user  [user-overrides.yaml: {PHD}" in ignored
    assert "archived.members" in ignored
    assert "'wizards' is not a group" in header

    reparsed = yaml.safe_load(text)
    assert reparsed == ds01infra.convert(data, lab.parent, today=date(2026, 3, 1))
    assert PHD in reparsed["users"]
    from_text = config.from_dict(reparsed)
    assert from_text.limits_for(PHD) == config.load(str(lab)).limits_for(PHD)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "files, message",
    [
        ({"resource-limits.yaml": "defaults: {}\ngroups:\n  student: {max_gpu_equivalents: lots}\n"},
         "groups.student.max_gpu_equivalents: 'lots' is not a number of GPU-equivalents"),
        ({"resource-limits.yaml": "defaults: {max_runtime_h: soon}\ngroups: {student: {}}\n"},
         "defaults.max_runtime_h: 'soon' is not a number of hours"),
        ({"resource-limits.yaml": "defaults: {memory: lots}\ngroups: {student: {}}\n"},
         "defaults.memory: 'lots' is not a size like 512m, 32g"),
        ({"group-overrides.txt": "# ok\njust-a-name\n"}, "group-overrides.txt:2: 'just-a-name' is not user:group"),
        ({"user-overrides.yaml": "- alice\n"}, "user-overrides.yaml: must be a mapping of user names to limits"),
        ({"lifecycle-exemptions.yaml": "exemptions:\n  - {username: a, expires_on: someday}\n"},
         "exemptions[0].expires_on: 'someday' is not an ISO date"),
        ({"lifecycle-exemptions.yaml": "exemptions: [\n"}, "lifecycle-exemptions.yaml: line 2 is not valid YAML"),
    ],
    ids=["gpus", "hours", "size", "group-override", "user-overrides", "expiry", "yaml"],
)
def test_errors_are_one_line_and_name_the_key(tmp_path, files, message):
    shutil.copy(FIXTURE, tmp_path / "resource-limits.yaml")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(str(tmp_path / "resource-limits.yaml"))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_convert_refuses_a_file_that_is_not_ds01infra():
    with pytest.raises(ConfigError, match="not a ds01-infra resource-limits.yaml"):
        ds01infra.convert({"groups": {"student": {}}}, Path("."))


# ---------------------------------------------------------------- the import command
def test_import_command_prints_the_equivalent_config(lab):
    result = CliRunner().invoke(import_ds01, [str(lab)], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output.startswith("# ds01q config converted from ds01-infra's")
    printed = config.from_dict(yaml.safe_load(result.output))
    assert printed.group_of(PHD).name == "researcher"
    assert printed.groups["student"].limits.max_gpus == 2.0


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ("groups: [1, 2\n", "is not valid YAML"),
        ("database: sqlite:///x.db\ngroups: {student: {}}\n", "not a ds01-infra resource-limits.yaml"),
        ("defaults: {}\ngroups: {student: {max_cpus: many}}\n", "groups.student.max_cpus: 'many' is not a number"),
    ],
    ids=["missing", "not-yaml", "ds01q-config", "bad-value"],
)
def test_import_command_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "resource-limits.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as e:
        import_ds01.main(args=[str(path)], standalone_mode=False)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_older_inline_members_and_user_overrides():
    data = {"defaults": {"max_mig_instances": 1, "max_runtime": "24h"}, "default_group": "students",
            "groups": {"students": {"members": ["ann"], "priority": 5},
                       "researchers": {"members": ["ben"], "max_mig_instances": 2, "priority": 50}},
            "user_overrides": {"ben": {"max_runtime": None}}}
    cfg = config.from_dict(ds01infra.convert(data, Path("/nonexistent")))
    assert cfg.group_of("ann").name == "students" and cfg.group_of("ben").name == "researchers"
    assert [cfg.groups[g].priority for g in ("students", "researchers")] == [5, 50]  # their own priority
    assert cfg.limits_for("ben").max_runtime_s is None and cfg.limits_for("ben").max_gpus == 2.0
