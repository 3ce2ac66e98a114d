"""The agent catalog reads OpenVidu's agent files as OpenVidu does, and keeps running on what it knows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dispatch_bot.bot.agent_catalog import MAX_FILE_BYTES, AgentCatalog
from dispatch_bot.commands.ports import AgentService

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
OPENVIDU = Path(__file__).parent / "fixtures" / "openvidu"  # one folder per deployment shape


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    shutil.copytree(FIXTURES, folder)
    return folder


def test_reads_every_agent_file(agents_dir: Path) -> None:
    snapshot = AgentCatalog(agents_dir).snapshot()
    assert snapshot.read_ok
    assert sorted(snapshot.agents) == [
        "auto-captions",
        "custom-two",
        "disabled-bot",
        "minimal",
        "mismatch",
        "speech-processing",
    ]
    speech = snapshot.agents["speech-processing"]
    assert (speech.file, speech.enabled) == ("agent-speech-processing.yaml", True)
    assert speech.services == (AgentService("live_captions", "manual", "vosk"),)
    assert snapshot.agents["auto-captions"].automatic_only
    assert snapshot.agents["disabled-bot"].enabled is False
    two = snapshot.agents["custom-two"]
    assert two.services == (
        AgentService("live_captions", "manual", "azure"),
        AgentService("summary", "automatic", "openai"),
    )
    assert not two.automatic_only
    assert snapshot.agents["minimal"].services == ()
    mismatch = snapshot.agents["mismatch"]
    assert mismatch.name_mismatch and mismatch.declared_name == "some-other-name"
    [problem] = snapshot.problems
    assert problem == "agent-broken.yaml is not valid YAML at line 5."


def test_only_files_named_like_openvidu_agents_count(agents_dir: Path) -> None:
    (agents_dir / "agent-.yaml").write_text("enabled: true\n")
    (agents_dir / "agent-bad name.yaml").write_text("enabled: true\n")
    (agents_dir / "notes.yaml").write_text("enabled: true\n")
    (agents_dir / "agent-x.json").write_text("{}")
    assert "x" not in AgentCatalog(agents_dir).snapshot().agents
    assert len(AgentCatalog(agents_dir).snapshot().agents) == 6


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("live_captions: yes\n", "agent-bad.yaml: `live_captions` must be a mapping with a `processing` key."),
        (
            "live_captions:\n  processing: sometimes\n",
            "agent-bad.yaml: `live_captions.processing` is 'sometimes'; OpenVidu accepts manual or automatic.",
        ),
        ("enabled: maybe\n", "agent-bad.yaml: `enabled` is 'maybe'; it must be true or false."),
        ("- a\n- b\n", "agent-bad.yaml must hold a mapping of settings"),
        ("agent_name: [x]\n", "agent-bad.yaml: `agent_name` must be a string."),
    ],
)
def test_bad_files_are_named_with_their_key(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "agent-bad.yaml").write_text(content)
    snapshot = AgentCatalog(tmp_path).snapshot()
    assert snapshot.agents == {}
    assert snapshot.problems[0].startswith(problem)


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "agent-huge.yaml").write_text("enabled: true\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    snapshot = AgentCatalog(tmp_path).snapshot()
    assert snapshot.agents == {}
    assert snapshot.problems == ("agent-huge.yaml is larger than 1024 KiB; it was not read.",)


def test_an_unreadable_folder_is_reported(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "agents"
    not_a_folder.write_text("")
    snapshot = AgentCatalog(not_a_folder).snapshot()
    assert not snapshot.read_ok
    assert snapshot.problems[0].startswith(f"The agent folder {not_a_folder} cannot be read")


def _touch_later(path: Path, content: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(content)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a visibly newer mtime, whatever the clock's grain


def test_changes_are_picked_up_and_a_broken_edit_keeps_the_last_good_reading(agents_dir: Path) -> None:
    catalog = AgentCatalog(agents_dir, check_interval=0)
    assert catalog.snapshot().agents["speech-processing"].services[0].processing == "manual"

    speech = agents_dir / "agent-speech-processing.yaml"
    _touch_later(speech, "enabled: true\nlive_captions:\n  processing: automatic\n")
    assert catalog.snapshot().agents["speech-processing"].automatic_only

    _touch_later(speech, "enabled: true\nlive_captions: [\n")
    snapshot = catalog.snapshot()
    assert snapshot.agents["speech-processing"].automatic_only  # the last good reading
    assert any(
        p.startswith("agent-speech-processing.yaml is not valid YAML") and "last good reading is kept" in p
        for p in snapshot.problems
    )

    (agents_dir / "agent-minimal.yml").unlink()
    _touch_later(agents_dir / "agent-new-one.yaml", "enabled: true\n")
    names = set(catalog.snapshot().agents)
    assert "minimal" not in names and "new-one" in names


def test_rereading_waits_for_the_interval(agents_dir: Path) -> None:
    catalog = AgentCatalog(agents_dir, check_interval=3600)
    catalog.snapshot()
    _touch_later(agents_dir / "agent-late.yaml", "enabled: true\n")
    assert "late" not in catalog.snapshot().agents


EXPECTED_FOLDERS = {
    # folder: (agent, enabled, processing of live_captions or None, provider)
    "default-manual": ("speech-processing", True, "manual", "vosk"),
    "older-automatic-disabled": ("speech-processing", False, "automatic", ""),
    "compose-without-enabled": ("speech-processing", None, "manual", "vosk"),
    "cloud-provider": ("speech-processing", True, "manual", "deepgram"),
    "custom-template": ("minimal", True, None, ""),
}


def test_every_openvidu_folder_fixture_is_checked() -> None:
    assert sorted(p.name for p in OPENVIDU.iterdir() if p.is_dir()) == sorted(EXPECTED_FOLDERS)


@pytest.mark.parametrize("folder", sorted(EXPECTED_FOLDERS))
def test_openvidu_agent_folders(folder: str) -> None:
    snapshot = AgentCatalog(OPENVIDU / folder).snapshot()
    name, enabled, processing, provider = EXPECTED_FOLDERS[folder]
    assert snapshot.problems == ()
    assert list(snapshot.agents) == [name]
    info = snapshot.agents[name]
    assert info.enabled is enabled
    if processing is None:
        assert info.services == ()
    else:
        assert info.services == (AgentService("live_captions", processing, provider),)  # type: ignore[arg-type]


def test_a_folder_problem_goes_when_the_folder_comes_back(agents_dir: Path) -> None:
    catalog = AgentCatalog(agents_dir, check_interval=0)
    assert catalog.snapshot().problems == ("agent-broken.yaml is not valid YAML at line 5.",)
    agents_dir.rename(agents_dir.with_name("away"))
    assert catalog.snapshot().problems[0].startswith(f"The agent folder {agents_dir} cannot be read")
    agents_dir.with_name("away").rename(agents_dir)
    assert catalog.snapshot().problems == ("agent-broken.yaml is not valid YAML at line 5.",)


def test_names_are_what_openvidu_registers(tmp_path: Path) -> None:
    (tmp_path / "agent-support-agent-v2.yml").write_text("enabled: true\nlive_captions:\n  processing: manual\n")
    (tmp_path / "agent-agent-foo.yaml").write_text("enabled: true\n")
    (tmp_path / "agent-blank.yaml").write_text("enabled: true\nagent_name: ''\n")
    (tmp_path / "agent-noproc.yaml").write_text("enabled: true\nlive_captions:\n  provider: vosk\n")
    snapshot = AgentCatalog(tmp_path).snapshot()
    assert sorted(snapshot.agents) == ["blank", "noproc", "support-"]
    assert "registers as `support-`, not `support-agent-v2`" in snapshot.agents["support-"].defects[0]
    assert snapshot.agents["blank"].name_mismatch
    assert "`live_captions` has no `processing` key" in snapshot.agents["noproc"].defects[0]
    [problem] = snapshot.problems
    assert problem.startswith("agent-agent-foo.yaml: OpenVidu names an agent after the text between the first two")
