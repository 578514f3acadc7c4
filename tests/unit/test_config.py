import textwrap
from pathlib import Path

import pytest

from ds01q import config
from ds01q.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "ds01q.example.yaml"


def test_design_example_loads_as_written():
    cfg = config.load(str(EXAMPLE))
    assert cfg.executor.kind == "docker"
    assert cfg.inventory_source == "static"
    assert len(cfg.inventory_gpus) == 2
    assert cfg.groups["student"].limits.max_gpus == 1.0
    assert cfg.groups["student"].limits.max_runtime_s == 24 * 3600
    assert cfg.groups["researcher"].idle_timeout_s == 3600
    assert cfg.groups["admin"].admin is True
    assert cfg.group_of("alice").name == "researcher"
    assert cfg.group_of("nobody-in-particular").name == "student"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("groups:\n  student: {max_runtime: 24 hours}\n",
         "groups.student.max_runtime: '24 hours' is not a duration like 30m, 24h, 2d"),
        ("executor: {kind: podman}\n", "executor.kind: 'podman' is not allowed (allowed: docker, process)"),
        ("groups:\n  student: {max_gpus: lots}\n", "groups.student.max_gpus: 'lots' is not a float"),
        ("groups:\n  student: {priority: 1}\ndefault_group: staff\n", "default_group: 'staff' is not a group"),
        ("groups:\n  student: {colour: red}\n", "groups.student.colour: unknown key"),
        ("users:\n  bob: {group: wizards}\ngroups: {student: {}}\n", "users.bob.group: 'wizards' is not a group"),
        ("groups: [1, 2\n", "is not valid YAML"),
    ],
    ids=["duration", "executor-kind", "float", "default-group", "unknown-key", "user-group", "yaml"],
)
def test_errors_name_the_key_path(tmp_path, yaml_text, message):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        config.load(str(p))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_user_override_adds_to_group_limits(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent("""
        groups:
          student: {max_gpus: 1.0, max_running_jobs: 3, max_runtime: 24h}
        users:
          bob: {max_gpus: 2.0}
    """))
    cfg = config.load(str(p))
    lim = cfg.limits_for("bob")
    assert lim.max_gpus == 2.0
    assert lim.max_running_jobs == 3  # kept from the group
    assert lim.max_runtime_s == 24 * 3600


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(str(tmp_path / "nope.yaml"))


def test_example_caps_cpu_and_memory_and_keeps_security_defaults():
    cfg = config.load(str(EXAMPLE))
    for g in cfg.groups.values():
        assert g.max_cpus and g.max_mem_bytes and g.cpus and g.mem_bytes, g
        assert g.cpus <= g.max_cpus and g.mem_bytes <= g.max_mem_bytes
    assert cfg.executor.network == "per-user"
    assert not cfg.security.allow_unmapped_uids and not cfg.security.allow_subordinate_uids
    assert not cfg.security.metrics_show_users


@pytest.mark.parametrize("text, message", [
    ("groups: {student: {max_cpus: 0}}\n", "groups.student.max_cpus: 0.0 must be a positive number"),
    ("groups: {student: {max_cpus: .nan}}\n", "must be a positive number"),
    ("executor: {network: host}\n", "executor.network: 'host' is not allowed (allowed: none, per-user, bridge)"),
    ("security: {max_connections_per_user: 0}\n", "must be at least 1"),
    ("security: {allow_unmapped_uids: 'yes'}\n", "security.allow_unmapped_uids"),
])
def test_security_keys_are_validated(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        config.load(str(p))


def test_preempt_grace_is_a_duration_with_a_default(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("groups: {student: {}}\n")
    assert config.load(str(p)).preempt_grace_s == 30.0
    p.write_text("groups: {student: {}}\nscheduler: {preempt_grace: 2m}\n")
    assert config.load(str(p)).preempt_grace_s == 120.0
    p.write_text("groups: {student: {}}\nscheduler: {preempt_grace: soon}\n")
    with pytest.raises(ConfigError, match=r"^scheduler.preempt_grace: 'soon' is not a duration"):
        config.load(str(p))


def test_launch_backoff_is_a_duration_with_a_default(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("groups: {student: {}}\n")
    assert config.load(str(p)).executor.launch_backoff_s == 5.0
    p.write_text("groups: {student: {}}\nexecutor: {launch_backoff: 0.5s}\n")
    assert config.load(str(p)).executor.launch_backoff_s == 0.5
    p.write_text("groups: {student: {}}\nexecutor: {launch_backoff: later}\n")
    with pytest.raises(ConfigError, match=r"^executor.launch_backoff: 'later' is not a duration"):
        config.load(str(p))
