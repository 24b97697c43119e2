"""Settings: layering of defaults, TOML, environment and flags, and start-up checks."""

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import make_folders

from daemon.config import (
    LIVE,
    RESTART_ONLY,
    ConfigError,
    Settings,
    load_settings,
    reload_class,
    restart_only_changes,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STYLEFOLD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in").mkdir()
    (tmp_path / "styles").mkdir()
    return {
        "inbox": tmp_path / "in",
        "outbox": tmp_path / "out",
        "styles": tmp_path / "styles",
        "state": tmp_path / "state",
    }


def error_of(config: Path | None, overrides: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, overrides)
    return str(caught.value)


def test_defaults_and_created_folders(folders: dict[str, Any]) -> None:
    settings = load_settings(None, folders)
    assert settings.archive == "move"
    assert settings.archive_dir == folders["state"] / "archive"
    assert settings.archive_path == settings.archive_dir
    assert settings.devices == ["auto"]
    assert settings.defaults.size == 512
    assert settings.no_sidecar == "wait"
    assert "heic" in settings.image_extensions
    assert settings.weights.vgg19 is None
    for name in ("outbox", "state"):
        assert folders[name].is_dir()
    assert settings.archive_path.is_dir()


def test_precedence_defaults_toml_env_flags(
    folders: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "stylefold.toml"
    config.write_text(
        'inbox = "in"\noutbox = "out"\nstyles = "styles"\nstate = "state"\n'
        "settle_seconds = 1.5\npoll_interval = 7\nqueue_max = 5\n"
        "[defaults]\nsize = 300\niterations = 40\ntv_weight = 0.5\n"
        '[weights]\nvgg19 = "weights/vgg19.pth"\n'
    )
    monkeypatch.setenv("STYLEFOLD_POLL_INTERVAL", "3")
    monkeypatch.setenv("STYLEFOLD_QUEUE_MAX", "6")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__SIZE", "256")
    monkeypatch.setenv("STYLEFOLD_DEVICES", "cpu, cuda:1")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__PRESERVE_COLORS", "True")  # as the docs say it
    monkeypatch.chdir("/")  # relative paths in the file are relative to the file, not the cwd
    settings = load_settings(
        config, {"queue_max": 9, "defaults": {"iterations": 12}, "retries": None}
    )
    assert settings.inbox == folders["inbox"]
    assert settings.settle_seconds == 1.5  # file over default
    assert settings.poll_interval == 3  # env over file
    assert settings.queue_max == 9  # flag over env
    assert settings.retries == 1  # a None flag means "not given"
    assert settings.defaults.size == 256  # nested env over nested file value
    assert settings.defaults.iterations == 12  # nested flag
    assert settings.defaults.tv_weight == 0.5  # untouched nested file value survives the merge
    assert settings.defaults.preserve_colors == "luminance"
    assert settings.devices == ["cpu", "cuda:1"]
    assert settings.weights.vgg19 == tmp_path / "weights" / "vgg19.pth"


def test_config_file_from_environment(
    folders: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('output_format = "png"\n')
    monkeypatch.setenv("STYLEFOLD_CONFIG", str(config))
    assert load_settings(None, folders).output_format == "png"


def test_lists_from_environment_json(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEFOLD_IGNORE_PATTERNS", '["*.bak", "draft-*"]')
    monkeypatch.setenv("STYLEFOLD_IMAGE_EXTENSIONS", ".JPG,png")
    monkeypatch.setenv("STYLEFOLD_WEB_ALLOWED_HOSTS", "Photos.Example.org., nas.local")
    settings = load_settings(None, folders)
    assert settings.ignore_patterns == ["*.bak", "draft-*"]
    assert settings.image_extensions == ["jpg", "png"]
    assert settings.web_allowed_hosts == ["photos.example.org", "nas.local"]


def test_an_unknown_setting_from_the_environment_names_its_variable(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A user's trial: `defaults.strenght: unknown setting` sent them to a config file that had
    no such line; the misspelt variable is named, with the name that works."""
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STRENGHT", "0.5")
    assert error_of(None, folders) == (
        "defaults.strenght: unknown setting from the environment variable "
        "STYLEFOLD_DEFAULTS__STRENGHT; unset it or rename it to STYLEFOLD_DEFAULTS__STRENGTH"
    )
    monkeypatch.delenv("STYLEFOLD_DEFAULTS__STRENGHT")
    monkeypatch.setenv("STYLEFOLD_WEIGHTS__PARTY", "1")
    assert error_of(None, folders).endswith("STYLEFOLD_WEIGHTS__PARTY; unset it")
    # A top-level setting put in a table is told its own variable (a newcomer's review).
    monkeypatch.delenv("STYLEFOLD_WEIGHTS__PARTY")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STATE", "/srv/state")
    assert error_of(None, folders).endswith("unset it or rename it to STYLEFOLD_STATE")
    # A part of a setting that has none was sent to the setting's own variable, not set (a
    # re-test).
    # Set in the file too: both are named (a re-test: the file's one came up on the next run).
    config = tmp_path / "both.toml"
    config.write_text("[defaults]\nstate = '/srv/state'\n")
    assert error_of(config, folders).endswith(
        "unset it or rename it to STYLEFOLD_STATE; the config file sets it too: state is a "
        "top-level setting: move it above the [defaults] line (every key after that line "
        "belongs to its table)"
    )
    monkeypatch.delenv("STYLEFOLD_DEFAULTS__STATE")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__SIZE__X", "1")
    assert error_of(None, folders) == (
        "defaults.size: must be a whole number; STYLEFOLD_DEFAULTS__SIZE__X sets a "
        "part of it, and it has none; unset it (give its value in the config file or "
        "STYLEFOLD_DEFAULTS__SIZE)"
    )


def test_a_number_written_as_text_is_told_its_fix(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A photographer's trial, in a sidecar: "50%" and "0,5" were told only to write a number;
    in a config file or a variable alike."""
    config = tmp_path / "text.toml"
    config.write_text('[defaults]\nstrength = "50%"\nsize = "1,024"\n')
    error = error_of(config, folders)
    assert (
        "defaults.size: must be a whole number (got '1,024'); write it without the commas: 1024;"
        in error
    )
    assert (
        "defaults.strength: must be a number (got '50%'); a percentage is written as a "
        "fraction: 0.5;" in error
    )
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STRENGTH", "0,5")
    assert "(got '0,5'); write a decimal point, not a comma: 0.5; fix it in" in error_of(
        None, folders
    )
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STRENGTH", "lots")  # no guess at other text
    assert "(got 'lots'); fix it in" in error_of(None, folders)


def test_a_table_whose_parts_disagree_names_where_its_parts_are_set(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A docs trial: a wrong layer in STYLEFOLD_DEFAULTS__STYLE_LAYERS, a documented variable,
    was told the variable "sets a part of it, and it has none; unset it", and to use
    STYLEFOLD_DEFAULTS, which no page names."""
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYERS", "conv9_9")
    error = error_of(None, folders)
    assert error.startswith("defaults: layer 'conv9_9' does not exist in vgg19"), error
    assert error.endswith(
        "; fix it in the config file's [defaults] table or STYLEFOLD_DEFAULTS__STYLE_LAYERS"
    )
    # Only the variables of the parts it names (a re-test was sent to ..._SEED as well).
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYERS", "conv1_1,conv2_1")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYER_WEIGHTS", "1,2,3")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__SEED", "3")
    assert error_of(None, folders).endswith(
        "; fix it in the config file's [defaults] table or STYLEFOLD_DEFAULTS__STYLE_LAYERS "
        "or STYLEFOLD_DEFAULTS__STYLE_LAYER_WEIGHTS"
    )
    for name in ("STYLE_LAYERS", "STYLE_LAYER_WEIGHTS", "SEED"):
        monkeypatch.delenv(f"STYLEFOLD_DEFAULTS__{name}")
    config = tmp_path / "weights.toml"
    config.write_text("[defaults]\nstyle_layer_weights = [1, 2]\n")
    assert error_of(config, folders) == (
        "defaults: style_layer_weights has 2 entries but style_layers has 5; give one weight "
        "per layer; fix it in the config file's [defaults] table"
    )


def test_settings_checked_together_name_the_variables_that_set_them(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-test: "raise pair_timeout or lower settle_seconds" sent an operator to a config
    file that set neither; STYLEFOLD_PAIR_TIMEOUT did."""
    monkeypatch.setenv("STYLEFOLD_PAIR_TIMEOUT", "0.5")
    assert error_of(None, folders).endswith(
        "raise pair_timeout or lower settle_seconds (STYLEFOLD_PAIR_TIMEOUT sets pair_timeout)"
    )
    monkeypatch.delenv("STYLEFOLD_PAIR_TIMEOUT")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__SIZE", "5000")
    monkeypatch.setenv("STYLEFOLD_MAX_OUTPUT_SIZE", "4000")
    assert error_of(None, folders).endswith(
        "lower defaults.size or raise max_output_size (STYLEFOLD_MAX_OUTPUT_SIZE sets "
        "max_output_size; STYLEFOLD_DEFAULTS__SIZE sets defaults.size)"
    )


def test_a_missing_setting_names_the_misspelt_variable_that_meant_it(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STYLEFOLD_INBX set, `run` said only that the inbox is not set (found trying it)."""
    inbox = str(folders.pop("inbox"))
    for misspelt in ("STYLEFOLD_INBX", "STYLEFOLD_INBO"):  # the second, within the right name
        monkeypatch.setenv(misspelt, inbox)
        assert error_of(None, folders) == (
            "inbox: not set; set it in the config file, STYLEFOLD_INBOX or --inbox\n"
            f"{misspelt} is not a setting and is ignored; did you mean STYLEFOLD_INBOX?"
        )
        monkeypatch.delenv(misspelt)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"max_pixels": 0}, "max_pixels: must be above 0"),
        ({"max_pixels": 0}, "STYLEFOLD_MAX_PIXELS"),
        ({"workers_per_device": 0}, "--workers"),
        ({"defaults": {"size": 99999}}, "defaults.size"),
        ({"defaults": {"size": 99999}}, "STYLEFOLD_DEFAULTS__SIZE"),
        ({"defaults": {"colour": 1}}, "defaults.colour: unknown setting"),
        ({"settle_second": 1}, "spelling (did you mean 'settle_seconds'?)"),
        (
            {"defaults": {"iteration": 3}},
            "defaults.iteration: unknown setting; remove it or "
            "check its spelling (did you mean 'iterations'?)",
        ),
        ({"defaults": {"size": 5000}}, "defaults.size 5000 is above max_output_size (4096)"),
        (
            {"defaults": {"size": 1024, "style_scale": 8}},
            "defaults.style_scale 8 at size 1024 makes the style image 8192 px long, above "
            "max_output_size (4096); lower defaults.style_scale or raise max_output_size",
        ),
        (
            {"max_iterations": 10},
            "defaults.iterations 300 is above max_iterations (10); "
            "lower defaults.iterations or raise max_iterations",
        ),
        ({"bogus": 1}, "bogus: unknown setting"),
        ({"size": 96}, "size: unknown setting; size belongs in the [defaults] table"),
        (
            {"defaults": {"archive": "keep"}},
            "defaults.archive: unknown setting; archive is a top-level setting: move it above "
            "the [defaults] line",
        ),
        (  # a new user's trial: told neither the spelling nor the place
            {"defaults": {"pair_timout": 60}},
            "defaults.pair_timout: unknown setting; did you mean 'pair_timeout'? pair_timeout is "
            "a top-level setting: move it above the [defaults] line",
        ),
        (
            {"strenght": 0.5},
            "strenght: unknown setting; did you mean 'strength'? strength belongs in the "
            "[defaults] table",
        ),
        ({"defaults": {"init": "image"}}, "defaults.init: init 'image' needs a start image"),
        ({"defaults": {"network": "vgg16"}}, "defaults.network: this daemon has no VGG16"),
        ({"devices": ["gpu"]}, "unknown device 'gpu'"),
        ({"devices": ["auto", "cpu"]}, "'auto' cannot be combined"),
        ({"image_extensions": ["json"]}, "sidecar extension"),
        ({"image_extensions": []}, "allow-list is empty"),
        ({"image_extensions": ["jpg", "pdf", "nef"]}, "stylefold cannot read pdf, nef files"),
        ({"ignore_patterns": ["a/b"]}, "without '/'"),
        ({"log_level": "loud"}, "unknown level 'loud'"),
        ({"archive": "delete"}, "archive: must be 'move' or 'keep'"),
        # told as a sidecar's values are (a re-test)
        ({"oom_fallback": "smaler"}, "(got 'smaler'); did you mean 'smaller'?"),
        ({"defaults": {"pooling": "mean"}}, "(got 'mean'); did you mean 'avg'?"),
        ({"defaults": {"multiscale": "yes"}}, "(got 'yes'); write \"on\""),
        ({"no_sidecar": "default"}, "set default_style"),
        ({"pair_timeout": 5, "settle_seconds": 5}, "pair_timeout (5 s) must be longer than"),
        ({"default_style": "../x"}, "not a style name"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"output_quality": 101}, "output_quality"),
        ({"web_allowed_hosts": ["https://photos.example.org/"]}, "without a scheme, port or path"),
        ({"web_allowed_hosts": ["photos.example.org:443"]}, "is not a host name"),
    ],
)
def test_bad_values_name_setting_and_fix(
    folders: dict[str, Any], change: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(None, {**folders, **change})


def test_missing_required_folders_each_named() -> None:
    message = error_of(None, {})
    for name in ("inbox", "outbox", "styles", "state"):
        assert f"{name}: not set; set it in the config file, STYLEFOLD_{name.upper()}" in message


def test_inbox_must_exist_and_is_never_created(folders: dict[str, Any], tmp_path: Path) -> None:
    missing = tmp_path / "share"
    message = error_of(None, {**folders, "inbox": missing})
    assert message == (
        f"inbox: {missing} does not exist; create it or set it in the config file, "
        "STYLEFOLD_INBOX or --inbox"
    )
    assert not missing.exists()


def test_styles_must_be_a_folder(folders: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in error_of(None, {**folders, "styles": tmp_path / "file"})


@pytest.mark.parametrize("name", ["outbox", "state", "styles", "archive_dir"])
def test_folders_inside_inbox_refused(folders: dict[str, Any], name: str) -> None:
    inner = folders["inbox"] / "sub"
    inner.mkdir()
    assert f"{name}: {inner} is inside the inbox" in error_of(None, {**folders, name: inner})


def test_inbox_equal_or_inside_outbox_refused(folders: dict[str, Any]) -> None:
    assert "it is the inbox" in error_of(None, {**folders, "outbox": folders["inbox"]})
    outer = {**folders, "outbox": folders["inbox"].parent}
    assert "inside the outbox" in error_of(None, outer)


@pytest.mark.parametrize("where", ["out", "out/.state"])
def test_state_in_the_outbox_refused(folders: dict[str, Any], where: str) -> None:
    """An operator's trial: `state = "outbox/.state"` passed doctor and ran; a sync tool would
    ship the live database, the spool and the archived originals to every phone."""
    state = folders["outbox"].parent / where
    message = error_of(None, {**folders, "state": state})
    assert f"state: {state} is inside the outbox" in message and "move it outside" in message


def test_symlinked_outbox_into_inbox_refused(folders: dict[str, Any], tmp_path: Path) -> None:
    (folders["inbox"] / "results").mkdir()
    (tmp_path / "link").symlink_to(folders["inbox"] / "results")
    assert "inside the inbox" in error_of(None, {**folders, "outbox": tmp_path / "link"})


def test_uncreatable_state_named(folders: dict[str, Any], tmp_path: Path) -> None:
    """A file in the way is named as such, by `run` and by the checks that create nothing
    (a re-test: "fix its permissions"; doctor said "ok", then failed to take the lock)."""
    (tmp_path / "blocker").write_text("x")
    blocked = tmp_path / "blocker" / "state"
    for create in (True, False):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, {**folders, "state": blocked}, create_dirs=create)
        message = str(caught.value)
        assert message.startswith(f"state: {blocked} cannot be created: {tmp_path / 'blocker'} ")
        assert "is a file, not a folder" in message and "STYLEFOLD_STATE" in message
        with pytest.raises(ConfigError) as caught:
            load_settings(None, {**folders, "state": tmp_path / "blocker"}, create_dirs=create)
        assert str(caught.value).startswith(f"state: {tmp_path / 'blocker'} is a file, not a")


def test_create_dirs_false_creates_nothing(folders: dict[str, Any]) -> None:
    load_settings(None, folders, create_dirs=False)
    assert not folders["outbox"].exists()
    assert not folders["state"].exists()


def test_config_file_errors(folders: dict[str, Any], tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "none.toml", folders)
    broken = tmp_path / "broken.toml"
    broken.write_text("inbox = \n")
    message = error_of(broken, folders)
    assert "is not valid TOML" in message
    assert "line 1" in message
    deep = tmp_path / "deep.toml"  # an attacker's trial: RecursionError, a traceback
    deep.write_text("x = " + "[" * 100_000 + "\n")
    assert error_of(deep, folders) == (
        f"config: {deep} nests its values too deeply to be read; fix the syntax"
    )
    latin = tmp_path / "latin.toml"  # a re-test: UnicodeDecodeError, a traceback
    latin.write_bytes("# caf\u00e9\n".encode("latin-1"))
    assert error_of(latin, folders) == (
        f"config: {latin} is not UTF-8 text (bad byte at offset 5); save it as UTF-8"
    )
    # A new user's trial: saved by Notepad with a byte-order mark, it was "not valid TOML (at
    # line 1, column 1)", with nothing to see there. Its mark is dropped, as a sidecar's is.
    marked = tmp_path / "marked.toml"
    marked.write_bytes(b"\xef\xbb\xbfsettle_seconds = 3\r\n")
    assert load_settings(marked, folders).settle_seconds == 3
    typo = tmp_path / "typo.toml"
    typo.write_text("setle_seconds = 3\n")
    assert "setle_seconds: unknown setting" in error_of(typo, folders)


def test_bad_environment_value_named(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEFOLD_SETTLE_SECONDS", "soon")
    message = error_of(None, folders)
    assert message.startswith("settle_seconds:")
    assert "'soon'" in message
    monkeypatch.setenv("STYLEFOLD_SETTLE_SECONDS", "1")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS", "{not json")
    assert "STYLEFOLD_DEFAULTS (or a STYLEFOLD_DEFAULTS__* variable)" in error_of(None, folders)


def test_settings_model_usable_directly(folders: dict[str, Any]) -> None:
    settings = Settings(**folders, archive_dir=folders["state"] / "elsewhere")
    assert settings.archive_path == folders["state"] / "elsewhere"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_described(name: str) -> None:
    """README's configuration table is generated from these; an empty cell leaves users guessing."""
    description = Settings.model_fields[name].description
    assert description and len(description) > 15, f"{name} has no useful description"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_says_what_a_reload_does(name: str) -> None:
    """SIGHUP applies a setting or keeps the running value; an unmarked one would be neither."""
    assert reload_class(Settings.model_fields[name]) in ("live", "restart"), (
        f"{name}: add json_schema_extra=_APPLIED_LIVE or _NEEDS_RESTART to its Field"
    )
    assert (name in LIVE) != (name in RESTART_ONLY)


def test_restart_only_settings_are_the_ones_fixed_at_start() -> None:
    assert set(RESTART_ONLY) == set(RESTART_VALUES)
    assert set(Settings.model_fields) == LIVE | RESTART_ONLY


# A changed value for every restart-only setting (valid, and unlike the base settings below).
RESTART_VALUES: dict[str, Any] = {
    "inbox": Path("/elsewhere/in"),
    "outbox": Path("/elsewhere/out"),
    "styles": Path("/elsewhere/styles"),
    "state": Path("/elsewhere/state"),
    "archive_dir": Path("/elsewhere/archive"),
    "devices": ["cpu"],
    "workers_per_device": 2,
    "compile": True,
    "backend": "ray",
    "ray_address": "auto",
    "ray_cpu_actors": 2,
    "weights": {"vgg19": "/elsewhere/vgg19.pth"},
    "watch_mode": "polling",
    "poll_interval": 5.0,
    "metrics_port": 9100,
    "metrics_host": "0.0.0.0",
    "web_host": "0.0.0.0",
    "web_port": 8000,
    "web_allowed_hosts": ["photos.example.org"],
    "gpu_required": True,
    "max_depth": 8,
    "max_tracked": 500,
    "ray_connect_timeout": 5.0,
    "ray_actor_cpus": 4,
}
LIVE_VALUES: dict[str, Any] = {
    "retries": 3,
    "rescan_interval": 10.0,
    "defaults": {"size": 256},
    "log_level": "debug",
    "ignore_patterns": ["*.bak"],
}


def _base(folders: dict[str, Any]) -> dict[str, Any]:
    return {**folders, "archive_dir": folders["state"] / "archive"}


@pytest.mark.parametrize("name", sorted(RESTART_VALUES))
def test_restart_only_changes_names_the_changed_setting(folders: dict[str, Any], name: str) -> None:
    old = Settings(**_base(folders))
    new = Settings(**{**_base(folders), name: RESTART_VALUES[name]})
    assert restart_only_changes(old, new) == [name]
    assert restart_only_changes(old, old) == []


def test_restart_only_changes_ignores_live_settings(folders: dict[str, Any]) -> None:
    old = Settings(**_base(folders))
    live = Settings(**_base(folders), **LIVE_VALUES)
    assert all(getattr(live, name) != getattr(old, name) for name in LIVE_VALUES)
    assert restart_only_changes(old, live) == []
    both = Settings(**{**_base(folders), **LIVE_VALUES, "devices": ["cpu"], "poll_interval": 9})
    assert restart_only_changes(old, both) == ["devices", "poll_interval"]


def test_a_folder_that_cannot_be_asked_is_told_not_a_traceback(tmp_path: Path) -> None:
    """A user's trial: an inbox on a FUSE stick whose process was gone ("Transport endpoint is
    not connected") ended `status` and `doctor` in a traceback. Any error but "not there" is
    told with the folder and what to do; here a name too long for the file system."""
    folders = make_folders(tmp_path)
    config = folders.config(inbox=str(tmp_path / ("x" * 300) / "inbox"))
    with pytest.raises(ConfigError, match=r"inbox: .* cannot be reached \(File name too long\)"):
        load_settings(config, {})


def test_nested_lists_from_environment_as_a_b_or_json(
    folders: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the README says of every list: a new user's STYLEFOLD_DEFAULTS__STYLE_LAYERS=a,b was
    refused, only JSON taken."""
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYERS", "conv1_1, conv2_1")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYER_WEIGHTS", "1,0.5")
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__CONTENT_LAYERS", '["conv4_2"]')
    defaults = load_settings(None, folders).defaults
    assert defaults.style_layers == ("conv1_1", "conv2_1")
    assert defaults.style_layer_weights == (1.0, 0.5)
    assert defaults.content_layers == ("conv4_2",)
    monkeypatch.setenv("STYLEFOLD_DEFAULTS__STYLE_LAYER_WEIGHTS", "1,heavy")
    with pytest.raises(ConfigError, match="style_layer_weights"):
        load_settings(None, folders)


def test_a_strength_beyond_its_scale_is_told_the_style_weight_to_set(
    folders: dict[str, Any], tmp_path: Path
) -> None:
    """As a sidecar's is (a re-test: a config's -1 was told only the bound)."""
    for strength, what in ((-1, "less style than strength 0"), (1.5, "more style than strength 1")):
        config = tmp_path / f"strength{strength}.toml"
        config.write_text(f"[defaults]\nstrength = {strength}\n")
        told = error_of(config, folders)
        assert "defaults.strength: must be" in told and f"(got {strength})" in told, told
        assert f"; for {what} gives (style_weight " in told and "set style_weight instead" in told
    config = tmp_path / "percent.toml"
    config.write_text("[defaults]\nstrength = 70\n")
    assert "(got 70); strength is a fraction: for 70 %, write 0.7" in error_of(config, folders)


def test_the_output_format_is_spelt_as_a_sidecar_may_spell_it(folders: dict[str, Any]) -> None:
    """A re-test: a sidecar's "jpeg" was taken, the config file's refused."""
    for given, meant in (("JPEG", "jpg"), ("tif", "tiff"), ("Png", "png")):
        assert load_settings(None, {**folders, "output_format": given}).output_format == meant
    assert "output_format" in error_of(None, {**folders, "output_format": "gif"})


@pytest.mark.parametrize("address", ["http://127.0.0.1:6379", "127.0.0.1", "ray://h:0", "h:x"])
def test_a_ray_address_that_is_no_address_is_a_setting_error(
    folders: dict[str, Any], address: str
) -> None:
    """An operator's trial: "http://127.0.0.1:6390" passed, then failed as a network error
    with exit 75, a restart loop over a typo."""
    told = error_of(None, {**folders, "ray_address": address})
    assert f"ray_address {address!r} is not local, auto, ray://host:port or host:port" in told


@pytest.mark.parametrize("address", ["local", "auto", "ray://10.0.0.2:10001", "head.lan:6379"])
def test_ray_addresses_as_documented_load(folders: dict[str, Any], address: str) -> None:
    assert load_settings(None, {**folders, "ray_address": address}).ray_address == address
