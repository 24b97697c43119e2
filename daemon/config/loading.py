"""Reading the settings: `load_settings` is the one entry point. It reads the TOML file itself
(so a syntax error names the line), lets pydantic-settings layer the environment and the CLI
flags on top, and then checks the folders. Every failure becomes a `ConfigError` whose message
names the setting and the fix, because a daemon that dies at start-up is read about in a journal,
not debugged."""

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from daemon.config.fields import CONFIG_ENV, ENV_PREFIX, PATH_FIELDS, WEIGHTS_PATH_FIELDS
from daemon.config.settings import Settings, toml_values
from daemon.fsutil import user_name
from daemon.utf8 import NotUtf8, text_of
from daemon.validation_words import number_text_fix, plain, value_hint
from service.files import NotAFile, open_regular
from service.params import beyond_strength


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says how to fix it."""


# The `stylefold run` flags that set a field (the others come from the file or the environment).
CLI_FLAGS: dict[str, str] = {
    "inbox": "--inbox",
    "outbox": "--outbox",
    "styles": "--styles",
    "state": "--state",
    "devices": "--device",
    "workers_per_device": "--workers",
    "backend": "--backend",
}


def _env_name(loc: tuple[str | int, ...]) -> str:
    """The STYLEFOLD_* variable that sets the setting at `loc`."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _fix_hint(loc: tuple[str | int, ...], verb: str = "fix", message: str = "") -> str:
    names = [str(part) for part in loc]
    env = _env_name(loc)
    deeper = sorted(name for name in os.environ if name.upper().startswith(f"{env}__"))
    if parts := _known_keys(loc):
        # A table ([defaults]) whose parts disagree: where its parts are set, not a variable
        # for the whole (a docs trial was told to unset STYLEFOLD_DEFAULTS__STYLE_LAYERS, a
        # documented setting, and to use STYLEFOLD_DEFAULTS, which no page names); the
        # variables of the parts the message names, where it names any (a re-test was sent to
        # STYLEFOLD_DEFAULTS__SEED about the layers' weights).
        if any(_names(message, part) for part in parts):
            deeper = [name for name in deeper if _names(message, name[len(env) + 2 :].lower())]
        whole = [name for name in os.environ if name.upper() == env]
        places = [f"the config file's [{'.'.join(names)}] table", *deeper, *whole]
        return f"{verb} it in {' or '.join(places)}"
    flag = CLI_FLAGS.get(names[0]) if len(names) == 1 else None
    where = f"the config file, {env} or {flag}" if flag else f"the config file or {env}"
    # STYLEFOLD_DEFAULTS__SIZE__X sets a part of a setting that has none (an operator told
    # to fix STYLEFOLD_DEFAULTS__SIZE looked for a variable that was not set)
    if deeper:
        sets, them = ("sets", "it") if len(deeper) == 1 else ("set", "them")
        return (
            f"{', '.join(deeper)} {sets} a part of it, and it has none; unset {them} (give "
            f"its value in {where})"
        )
    return f"{verb} it in {where}"


def _describe(error: ValidationError, toml: Mapping[str, Any]) -> str:
    """One sentence per problem, each naming the setting and where to change it (`toml`: the
    config file's values, where an unknown setting may be given as well)."""
    lines = []
    for problem in error.errors():
        loc = tuple(part for part in problem["loc"] if part != "__root__")
        message = plain(problem["msg"])
        if not loc:  # settings checked together: the variables that set the ones named
            lines.append(message + _set_by_variables(message))
            continue
        name = ".".join(str(part) for part in loc)
        if problem["type"] == "missing":
            lines.append(f"{name}: not set; {_fix_hint(loc, 'set')}")
        elif problem["type"] == "extra_forbidden" and (variable := _variable_for(loc)):
            told = f"{_unknown_fix(loc, variable)}"
            if _given_in(toml, loc):  # a re-test: followed, the file's one came up next
                told += f"; the config file sets it too: {_unknown_fix(loc)}"
            lines.append(
                f"{name}: unknown setting from the environment variable {variable}; {told}"
            )
        elif problem["type"] == "extra_forbidden":
            lines.append(f"{name}: unknown setting; {_unknown_fix(loc)}")
        else:
            got = problem.get("input")
            simple = isinstance(got, str | int | float | bool) and repr(got) not in message
            shown = f" (got {got!r})" if simple else ""
            beyond = beyond_strength(problem["type"], loc, got)
            if problem["type"] in ("float_parsing", "int_parsing") and isinstance(got, str):
                whole = problem["type"] == "int_parsing"  # "50%", "0,5", "1,024" (a trial)
                beyond += number_text_fix(got.strip(), whole, None, quoted=False)
            if problem["type"] == "literal_error":  # as a sidecar's value is (a re-test)
                expected = str(problem.get("ctx", {}).get("expected", ""))
                beyond += value_hint(re.findall(r"'([^']*)'", expected), got)
            lines.append(f"{name}: {message}{shown}{beyond}; {_fix_hint(loc, message=message)}")
    return "\n".join(lines)


def _names(message: str, setting: str) -> bool:
    """Whether `message` names `setting` (a dotted name), not a part of a longer name."""
    return re.search(rf"(?<![\w.]){re.escape(setting)}(?![\w.])", message) is not None


def _set_by_variables(message: str) -> str:
    """ " (STYLEFOLD_PAIR_TIMEOUT sets pair_timeout)" for each setting `message` names that a
    variable sets: a re-test was sent to a config file that set neither of the two."""
    found = [
        f"{variable} sets {setting}"
        for variable in setting_variables()
        if variable in os.environ
        and _names(message, setting := variable[len(ENV_PREFIX) :].lower().replace("__", "."))
    ]
    return f" ({'; '.join(found)})" if found else ""


def _given_in(values: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    here: object = values
    for part in loc:
        if not isinstance(here, Mapping) or part not in here:
            return False
        here = here[part]
    return True


def _variable_for(loc: tuple[str | int, ...]) -> str | None:
    """The STYLEFOLD_* variable that set `loc`, if one did: an operator told of
    `defaults.strenght` looks for it in the config file and finds nothing."""
    wanted = _env_name(loc)
    return next((name for name in os.environ if name.upper() == wanted), None)


def _unknown_fix(loc: tuple[str | int, ...], variable: str | None = None) -> str:
    """What to do about a key its table does not have: a close spelling, or the table where a
    setting of that name lives (TOML puts every key after `[defaults]` into that table); for
    one set by the environment `variable`, the variable that sets it."""
    key, table = str(loc[-1]), loc[:-1]
    home = _home_of(key, table)
    if variable is not None:
        return f"unset it or rename it to {_env_name(home)}" if home else "unset it"
    if home is None:
        return "remove it or check its spelling"
    name = str(home[-1])
    if home[:-1] == table:
        return f"remove it or check its spelling (did you mean {name!r}?)"
    # pair_timout under [defaults]: a new user's trial was told neither spelling nor place
    guess = "" if name == key else f"did you mean {name!r}? "
    if not home[:-1]:
        return (
            f"{guess}{name} is a top-level setting: move it above the "
            f"[{'.'.join(map(str, table))}] line (every key after that line belongs to its table)"
        )
    other = home[0]
    return f"{guess}{name} belongs in the [{other}] table: put it under the [{other}] line"


def _home_of(key: str, table: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where a setting named like `key` lives: its close spelling in `table`, else that name
    or its close spelling at the top level or in the [defaults] or [weights] table; None when
    nowhere."""
    places = [table] + [other for other in [(), ("defaults",), ("weights",)] if other != table]
    for exact in (True, False):
        for place in places:
            known = _known_keys(place)
            if exact and key in known:
                return (*place, key)
            close = [] if exact else difflib.get_close_matches(key, known, n=1)
            if close:
                return (*place, close[0])
    return None


def setting_variables(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """The environment variable of every setting (`STYLEFOLD_DEFAULTS__SIZE` for nested ones)."""
    names = []
    for name, field in model.model_fields.items():
        table = field.annotation
        if isinstance(table, type) and issubclass(table, BaseModel):
            names += setting_variables(table, f"{prefix}{name.upper()}__")
        else:
            names.append(prefix + name.upper())
    return names


def misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """STYLEFOLD_* variables that set nothing but are spelt nearly like a setting's: the
    settings ignore variables they do not know, so a typo would leave the default in place
    unsaid. Only near misses count; other STYLEFOLD_* names are the tests' and tools' own."""
    known = setting_variables()
    problems = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known and name != CONFIG_ENV:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
            if close:
                problems.append(f"{name} is not a setting and is ignored; did you mean {close[0]}?")
    return problems


def _known_keys(table: tuple[str | int, ...]) -> list[str]:
    """The setting names allowed in `table` (() for the top level, ("defaults",) ...)."""
    model: Any = Settings
    for part in table:
        field = model.model_fields.get(str(part)) if _is_model(model) else None
        model = field.annotation if field is not None else None
    return list(model.model_fields) if _is_model(model) else []


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; relative folder paths in it are relative to the file itself."""
    try:
        with open_regular(path) as handle:
            values = tomllib.loads(text_of(handle.read()))
    except FileNotFoundError:
        raise ConfigError(
            f"config: {path} does not exist; create it or point --config/{CONFIG_ENV} at "
            "an existing file"
        ) from None
    except (IsADirectoryError, NotAFile) as exc:
        what = "a folder" if isinstance(exc, IsADirectoryError) else exc.strerror
        raise ConfigError(
            f"config: {path} is {what}; point --config/{CONFIG_ENV} at the TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:  # an attacker's trial: 100,000 "[" gave a traceback
        raise ConfigError(
            f"config: {path} nests its values too deeply to be read; fix the syntax"
        ) from None
    except NotUtf8 as exc:  # a re-test: a reload of such a file ended the daemon
        raise ConfigError(
            f"config: {path} is not UTF-8 text ({exc.why}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config: cannot read {path} ({exc.strerror}); check its permissions"
        ) from None
    base = path.resolve().parent
    tables: list[tuple[dict[str, Any], tuple[str, ...]]] = [(values, PATH_FIELDS)]
    if isinstance(values.get("weights"), dict):
        tables.append((values["weights"], WEIGHTS_PATH_FIELDS))
    for table, names in tables:
        for name in names:
            if isinstance(table.get(name), str):
                table[name] = str(base / Path(table[name]).expanduser())
    return values


@contextmanager
def _toml_layer(values: Mapping[str, Any]) -> Iterator[None]:
    token = toml_values.set(values)
    try:
        yield
    finally:
        toml_values.reset(token)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _reachable(name: str, path: Path) -> None:
    """A folder that is there or not, but not one that cannot be asked: a FUSE mount whose
    process is gone, a share whose server went ("Transport endpoint is not connected", a user's
    trial: status and doctor ended in a traceback)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except PermissionError as exc:  # a non-root trial was told to mount it again
        raise ConfigError(
            f"{name}: {path} cannot be reached ({exc.strerror}): {_shut_by(path)} shuts this "
            "user out; run as the daemon's user, or give this one the folders' group (under "
            "the systemd unit, a folder in /home is hidden by ProtectHome=: deploy/README.md, "
            "drop-ins/home-folder.conf)"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{name}: {path} cannot be reached ({exc.strerror}); if it is on a share or a "
            "stick whose connection is gone, mount it again"
        ) from None


def _shut_by(path: Path) -> str:
    """The first folder on the way to `path` this user may not pass, with its owner and mode
    (an operator's trial: a root-owned state folder was told as "a folder on its way", under
    the name archive_dir, which the operator had never set)."""
    for folder in reversed(path.absolute().parents):
        try:
            seen = folder.stat()
        except OSError:
            break
        if not os.access(folder, os.X_OK):
            owner = user_name(seen.st_uid)
            return f"{folder}, on its way (owner {owner}, mode {stat.S_IMODE(seen.st_mode):04o}),"
    return "a folder on its way"


def check_folders(settings: Settings, *, create: bool = True, writable: bool = True) -> None:
    """The inbox and the styles library must exist (an absent inbox is often an unmounted share,
    which must not be papered over by creating an empty folder); outbox, state and archive are
    created. Folders must not nest into the inbox, or the daemon would ingest its own output,
    nor the state folder into the outbox, which is synced elsewhere.
    With `writable=False` (the web page, which only reads them, maybe from a read-only view)
    the outbox, state and archive need only be readable."""
    given = {
        "inbox": settings.inbox,
        "outbox": settings.outbox,
        "styles": settings.styles,
        "state": settings.state,
        "archive_dir": settings.archive_path,
    }
    for name, path in given.items():
        _reachable(name, path)
    real = {name: path.resolve() for name, path in given.items()}
    if real["inbox"] == real["outbox"]:
        raise ConfigError(
            f"outbox: it is the inbox ({settings.inbox}); give the outbox its own folder"
        )
    for name in ("outbox", "styles", "state", "archive_dir"):
        if _within(real[name], real["inbox"]):
            raise ConfigError(
                f"{name}: {real[name]} is inside the inbox {real['inbox']}, so the daemon would "
                f"watch its own files; move it outside the inbox ({_fix_hint((name,), 'set')})"
            )
    if _within(real["inbox"], real["outbox"]):
        raise ConfigError(
            f"inbox: {real['inbox']} is inside the outbox {real['outbox']}; use separate folders"
        )
    if _within(real["state"], real["outbox"]):
        # A sync tool would ship the live database, the spool and the archive to every phone,
        # and a two-way one could delete or overwrite them there.
        raise ConfigError(
            f"state: {real['state']} is inside the outbox {real['outbox']}, which sync tools "
            f"copy to other machines; move it outside the outbox ({_fix_hint(('state',), 'set')})"
        )
    for name in ("inbox", "styles"):
        path = real[name]
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise ConfigError(f"{name}: {path} {what}; create it or {_fix_hint((name,), 'set')}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{name}: {path} is not readable; fix its permissions")
    for name in ("outbox", "state", "archive_dir"):
        path = real[name]
        base = nearest_existing(path)
        if not base.is_dir():  # a re-test: "fix its permissions", and doctor said "ok"
            where = "is a file" if base == path else f"cannot be created: {base} is a file"
            raise ConfigError(f"{name}: {path} {where}, not a folder; {_fix_hint((name,), 'set')}")
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"{name}: cannot create {path} ({exc.strerror}); create it by hand or "
                    f"{_fix_hint((name,), 'set')}"
                ) from None
        need, what = (os.W_OK, "writable") if writable else (os.R_OK, "readable")
        if path.exists() and not (path.is_dir() and os.access(path, need | os.X_OK)):
            raise ConfigError(
                f"{name}: {path} is not a {what} folder; fix its permissions or "
                f"{_fix_hint((name,), 'set')}"
            )


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest folder above it that exists (where it would be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def named_config(given: Path | None) -> Path | None:
    """The config file read: --config's, else STYLEFOLD_CONFIG's, else none."""
    if given is None and os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return given


def load_settings(
    config_path: Path | None,
    overrides: Mapping[str, Any],
    *,
    create_dirs: bool = True,
    writable: bool = True,
) -> Settings:
    """Build and check the settings. `overrides` are CLI flags (None values mean 'not given');
    `config_path` falls back to STYLEFOLD_CONFIG. With `create_dirs=False` (read-only commands
    such as `status` and `validate`) missing output folders are not created; with
    `writable=False` (the web page) they need only be readable."""
    config_path = named_config(config_path)
    toml = read_toml(config_path.expanduser()) if config_path is not None else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        with _toml_layer(toml):
            settings = Settings(**given)
    except ValidationError as exc:
        # a misspelt variable is often why a setting is missing or wrong (STYLEFOLD_INBX
        # set, and the inbox told "not set")
        told = _describe(exc, toml)
        named = set(re.findall(r"\bSTYLEFOLD_\w+", told))  # unknown settings' variables
        misspelt = [p for p in misspelt_variables(os.environ) if p.split()[0] not in named]
        told += _unread_config(config_path, exc, explained=bool(misspelt))
        for problem in misspelt:
            told += f"\n{problem}"
        raise ConfigError(told) from None
    except SettingsError as exc:
        raise ConfigError(_environment_error(exc)) from None
    check_folders(settings, create=create_dirs, writable=writable)
    return settings


LOCAL_CONFIG = Path("stylefold.toml")


def _unread_config(config_path: Path | None, error: ValidationError, explained: bool) -> str:
    """A hint when settings are missing and no config file was given, naming one that lies
    right here (a new user's trial: `stylefold status` beside their stylefold.toml said every
    folder was not set). It is not read unasked: a service must not change with its working
    folder."""
    missing = any(problem["type"] == "missing" for problem in error.errors())
    if config_path is not None or not missing:
        return ""
    if LOCAL_CONFIG.is_file():
        return (
            f"\n(no config file was given, and {LOCAL_CONFIG} is in this folder: pass --config "
            f"{LOCAL_CONFIG}, or set {CONFIG_ENV})"
        )
    if explained:  # a misspelt variable says what was meant
        return ""
    # "set it in the config file" sent a new user, just after the demo, looking for one
    return f"\n(no config file was given: pass --config FILE, or set {CONFIG_ENV})"


def _environment_error(exc: SettingsError) -> str:
    """pydantic-settings names the setting and its own class, not the variable or the fix."""
    found = re.search(r'field "(\w+)"', str(exc))
    if found is None:
        return f"environment: {exc}; fix the STYLEFOLD_* variable"
    name = f"{ENV_PREFIX}{found[1].upper()}"
    return (
        f"environment: {name} (or a {name}__* variable) cannot be read: give a nested key as "
        f"{name}__KEY=value, a list as a,b or as JSON, a table as JSON"
    )
