"""Target files: an app's sign-up described in TOML, so that the lab measures it with no
change to the app. One format for every target; the lab's own five variants are the first
(``apps/target.toml``), and the bench, the locust user, the summary and the report read a
variant's properties from its target, nowhere else.

A target file is a ``maillab.toml`` (or a ``[tool.maillab]`` table in the app's
pyproject.toml). Its vocabulary is borrowed: ordered flow steps as Artillery's (``get``/
``post`` with ``form``/``json`` and ``extract``), a regex with one group as Taurus's
``extract-regexp``, ``${name}`` placeholders as Schemathesis' TOML. The models below are the
one place the format is defined (pydantic: every mistake names its key); what each field means
is in the README's "Your own app" section.

    name = "shop"
    [app]
    command = "gunicorn 'shop:create_app()' --bind 127.0.0.1:${port}"
    env = { FLASK_MAIL_PORT = "${smtp_port}" }
    [variants.inline]
    [variants.thread]
    env = { SHOP_MAIL = "thread" }
    [[signup]]
    get = "/register"
    [[signup]]
    post = "/register"
    form = { email = "${email}", password = "${password}" }
    accepted = [302]
    [email]
    link = "/confirm/"
    [verify]
    get = "${link}"
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

VARIANT_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
BUILT_IN_FILE = Path(__file__).resolve().parent.parent / "apps" / "target.toml"
FILE_NAME = "maillab.toml"

# The placeholders the lab fills, and where each value comes from. A step may also use the
# names its earlier steps extracted.
LAB_PLACEHOLDERS = {
    "port": "the app's port (chosen free per cell)",
    "variant": "the variant's name",
    "number": "which of a process's copies this is (1, 2...)",
    "workers": "the profile's web workers", "threads": "the profile's threads per worker",
    "worker_threads": "the profile's consumer threads",
    "metrics_port": "a free port for a process's Prometheus metrics",
    "smtp_host": "fakesmtp's host", "smtp_port": "fakesmtp's port",
    "smtp_tls": "1 for starttls+auth, 0 for plain", "smtp_username": "the SMTP login (or empty)",
    "smtp_password": "the SMTP password (or empty)", "smtp_ca_file": "the run's CA certificate",
    "database_url": "a fresh database per cell", "instance_dir": "a fresh folder per cell",
    "queue_url": "the consumer's queue (Huey on Redis in the scale profile, else empty)",
    "redis_url": "a private redis-server for the run (a variant whose broker is \"redis\")",
    "rabbitmq_url": "a private RabbitMQ for the run (a variant whose broker is \"rabbitmq\")",
    "password_hash": "the profile's password hashing (maillab's own variants)",
    "python": "the lab's Python interpreter",
}


class TargetError(ValueError):
    """A target file that cannot be used, in one line: ``file: key: what was expected``."""


class Template(string.Template):
    """``${name}`` placeholders (``$$`` for a dollar sign); only the braced form: ``$name``
    is refused (it reads like a placeholder and would be sent as it is)."""

    pattern = r"""
    \$(?:
      (?P<escaped>\$) |
      \{(?P<braced>[a-z_][a-z0-9_]*)\} |
      (?P<named>(?!)) |
      (?P<invalid>\{[^}]*\}?|[A-Za-z_])
    )
    """  # type: ignore[assignment]


def placeholders(text: str) -> set[str]:
    return set(Template(text).get_identifiers())


def fill(text: str, values: Mapping[str, str], where: str) -> str:
    """``text`` with its placeholders filled; a name with no value is a TargetError naming
    ``where`` (the key the text came from)."""
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise TargetError(f"{where}: placeholder ${{{exc.args[0]}}} has no value here; known: "
                          f"{', '.join(sorted(values))}") from None
    except ValueError:
        raise TargetError(f"{where}: a '$' must start a ${{name}} placeholder (write $$ for a "
                          f"dollar sign) in {text!r}") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class App(_Model):
    """How the app is started (``command``) or where it already runs (``base_url``)."""

    command: str | None = None
    base_url: str | None = None
    cwd: str | None = None  # relative to the target file's folder
    env: dict[str, str] = {}
    ready: str = Field(default="/", pattern=r"^/")  # a path GET until it answers below 500
    ready_timeout_s: float = Field(default=60, gt=0, le=600)
    # What a graceful reload is for the app (app-reload): gunicorn's is SIGHUP.
    reload_signal: Literal["HUP", "USR2", "TERM"] | None = "HUP"

    @model_validator(mode="after")
    def _one_way(self) -> App:
        if (self.command is None) == (self.base_url is None):
            raise ValueError("give either command (the lab starts the app) or base_url (it "
                             "runs elsewhere)")
        if self.base_url is not None and not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://: {self.base_url!r}")
        return self


class Process(_Model):
    """Another process the app needs: a queue consumer, an outbox relay, a Celery worker."""

    command: str
    cwd: str | None = None
    env: dict[str, str] = {}
    ready_line: str | None = None  # a regex its output matches once it is ready
    ready_timeout_s: float = Field(default=30, gt=0, le=600)
    # A Prometheus endpoint (with ${metrics_port}) and the gauge of tasks waiting, for the
    # drain and the cell's peak queue depth; without it the drain waits on SMTP alone.
    metrics: str | None = None
    queue_depth: str | None = None


class Database(_Model):
    """How the app starts each cell empty: a fresh ``${database_url}``/``${instance_dir}``
    (always), and optionally a command run before the app starts."""

    reset: str | None = None


class Documented(_Model):
    """What a variant's own documentation says happens to its email in one scenario; the
    report holds the cell's counts to it and says plainly where they differ."""

    lost: Literal["none", "some"] | None = None  # lost silently within the cell
    duplicates: Literal["none", "maybe"] | None = None
    says: str  # the claim, in a sentence
    source: str | None = None  # where it is said (a URL)


class Variant(_Model):
    summary: str = ""
    sends_email: bool = True
    # The request waits for the SMTP conversation (it sends inside the request): its
    # capacity is the app's threads / the SMTP time.
    waits_for_smtp: bool = False
    # The process (a key of [processes]) that delivers this variant's email; none: the app.
    delivered_by: str | None = None
    # Other processes it runs (delivered_by is always among them).
    processes: list[str] = []
    command: str | None = None  # overrides [app].command
    env: dict[str, str] = {}    # added to [app].env
    # The server its email waits in, which broker-restart stops and starts: "redis" or
    # "rabbitmq" (a private one for the run, ${redis_url} / ${rabbitmq_url}), or "queue" (the
    # profile's queue, a server only when queue = "redis").
    broker: Literal["queue", "redis", "rabbitmq"] | None = None
    # scenario name -> what the variant's documentation says happens in it
    documented: dict[str, Documented] = {}

    @field_validator("documented")
    @classmethod
    def _scenarios(cls, value: dict[str, Documented]) -> dict[str, Documented]:
        from loadtests.scenarios import SCENARIOS  # scenarios reads variants: imported late

        for name in value:
            if name not in SCENARIOS:
                raise ValueError(f"documented: unknown scenario {name!r}; known: "
                                 f"{', '.join(SCENARIOS)}")
        return value

    @property
    def consumer(self) -> str | None:
        return self.delivered_by

    @property
    def in_threads(self) -> bool:
        """It sends from a thread per email inside the app (neither in the request nor by
        another process): one live thread per email in flight, no bound from SMTP."""
        return self.sends_email and not self.waits_for_smtp and self.delivered_by is None

    @property
    def runs(self) -> list[str]:
        extra = [self.delivered_by] if self.delivered_by else []
        return list(dict.fromkeys([*extra, *self.processes]))


class Step(_Model):
    """One HTTP request of the sign-up, in order."""

    get: str | None = None
    post: str | None = None
    name: str | None = None  # how the step is called in the samples (default: its kind)
    form: dict[str, str] | None = None
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    headers: dict[str, str] = {}
    # name -> regex with one group, searched in the answer's body. A post's form needs none
    # for its hidden inputs (a CSRF token): those of the last page's form are sent with it.
    extract: dict[str, str] = {}
    accepted: list[int] = [200]  # "accepted, check your email"
    failed: list[int] | None = None  # a visible failure (default: any other status)
    follow: bool = False  # GET the redirect's Location (what the person's browser shows)

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.get is None) == (self.post is None):
            raise ValueError("a step is either get = PATH or post = PATH")
        if self.get is not None and (self.form is not None or self.json_body is not None):
            raise ValueError("a get step sends no form or json")
        if self.form is not None and self.json_body is not None:
            raise ValueError("a step posts a form or json, not both")
        return self

    @field_validator("extract")
    @classmethod
    def _groups(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{name}: not a regex: {exc}") from None
            if compiled.groups != 1:
                raise ValueError(f"{name}: the regex needs exactly one (group), the value "
                                 f"taken; {pattern!r} has {compiled.groups}")
        return value

    @property
    def method(self) -> str:
        return "GET" if self.get is not None else "POST"

    @property
    def path(self) -> str:
        return self.get if self.get is not None else str(self.post)


class Email(_Model):
    address: str = "u-${id}@maillab.test"
    link: str | None = "/"  # the first link in the email containing this (a prefix or a part)
    link_regex: str | None = None  # or a regex with one group
    part: Literal["any", "text", "html"] = "any"

    @model_validator(mode="after")
    def _one_link(self) -> Email:
        if "${id}" not in self.address:
            raise ValueError(f"address must contain ${{id}} (unique per sign-up): "
                             f"{self.address!r}")
        if self.link_regex is not None:
            if re.compile(self.link_regex).groups != 1:
                raise ValueError("link_regex needs exactly one (group), the link")
        return self


class Verify(_Model):
    """Confirming the address: GET the link, or GET it and submit the form on that page."""

    get: str = "${link}"
    submit_form: bool = False
    form: dict[str, str] = {}  # added to the page's form when submit_form
    verified: list[int] = [200]
    location: str | None = None  # a regex the redirect's Location matches when verified
    text: str | None = None  # a regex the answer's body matches when verified
    headers: dict[str, str] = {}


class Target(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    app: App
    processes: dict[str, Process] = {}
    database: Database = Database()
    variants: dict[str, Variant] = Field(min_length=1)
    signup: list[Step] = Field(min_length=1)
    email: Email = Email()
    verify: Verify | None = Verify()
    password: str = "maillab load test 1"
    # The gate's rules for this target's runs (a file relative to this one); none: the
    # rules every target shares (loadtests/target-gates.toml).
    gate_rules: str | None = None
    # Filled by load_target, not written in the file.
    source: str = ""
    sha256: str = ""

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Variant]) -> dict[str, Variant]:
        for name in value:
            if not re.fullmatch(VARIANT_NAME, name):
                raise ValueError(f"variant name {name!r}: letters, digits, - and _ only")
        return value

    @model_validator(mode="after")
    def _references(self) -> Target:
        for name, variant in self.variants.items():
            for process in variant.runs:
                if process not in self.processes:
                    have = ", ".join(self.processes) or "none"
                    raise ValueError(f"variants.{name}: names process {process!r}, which "
                                     f"[processes] does not have ({have})")
            if self.app.command is None and variant.command is None and variant.runs:
                raise ValueError(f"variants.{name}: an app that runs elsewhere (base_url) has "
                                 "no processes the lab starts")
        if not any(step.post is not None for step in self.signup):
            raise ValueError("signup: needs a post step (the sign-up itself)")
        return self

    @property
    def folder(self) -> Path:
        return Path(self.source).parent

    @property
    def built_in(self) -> bool:
        return Path(self.source) == BUILT_IN_FILE

    @property
    def rules_file(self) -> Path | None:
        return (self.folder / self.gate_rules).resolve() if self.gate_rules else None

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise TargetError(f"{self.source}: variants: no variant {name!r}; this target has "
                              f"{', '.join(self.variants)}") from None

    def step_name(self, index: int) -> str:
        """A step's name in the samples: its own, else register for the post and
        register_form / register_sent for the gets before and after it."""
        step = self.signup[index]
        if step.name:
            return step.name
        post = next(i for i, s in enumerate(self.signup) if s.post is not None)
        if index == post:
            return "register"
        return "register_form" if index < post else "register_sent"

    @property
    def sign_up_step(self) -> int:
        return next(i for i, s in enumerate(self.signup) if s.post is not None)


def _location(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"] if not str(part).startswith(
        ("function-after", "json-or-python")))


def parse_target(data: dict[str, Any], source: str) -> Target:
    """A target from its TOML table, or a TargetError naming the key of the first mistake."""
    raw = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
    try:
        target = Target.model_validate({**data, "source": source, "sha256": raw})
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required"
        where = _location(error)
        raise TargetError(f"{source}: {where + ': ' if where else ''}{message}") from None
    _check_placeholders(target)
    return target


def _check_placeholders(target: Target) -> None:
    lab = set(LAB_PLACEHOLDERS)
    texts = [("app.command", target.app.command or ""),
             *((f"app.env.{k}", v) for k, v in target.app.env.items())]
    for name, process in target.processes.items():
        texts += [(f"processes.{name}.command", process.command),
                  (f"processes.{name}.metrics", process.metrics or ""),
                  *((f"processes.{name}.env.{k}", v) for k, v in process.env.items())]
    for name, variant in target.variants.items():
        texts += [(f"variants.{name}.command", variant.command or ""),
                  *((f"variants.{name}.env.{k}", v) for k, v in variant.env.items())]
    if target.database.reset:
        texts.append(("database.reset", target.database.reset))
    for where, text in texts:
        _known(target, where, text, lab)
    known = {"email", "password"}
    for index, step in enumerate(target.signup):
        where = f"signup[{index}]"
        values = [step.path, *step.headers.values(), *(step.form or {}).values()]
        if step.json_body is not None:
            values += [v for v in _strings(step.json_body)]
        for text in values:
            _known(target, where, text, known)
        known |= set(step.extract)
    _known(target, "email.address", target.email.address, {"id"})
    if target.verify is not None:
        for text in [target.verify.get, *target.verify.form.values(),
                     *target.verify.headers.values()]:
            _known(target, "verify", text, {"link", "email", "password"} | known)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _known(target: Target, where: str, text: str, known: set[str]) -> None:
    if not Template(text).is_valid():
        raise TargetError(f"{target.source}: {where}: a '$' must start a ${{name}} placeholder "
                          f"(write $$ for a dollar sign) in {text!r}")
    unknown = sorted(placeholders(text) - known)
    if unknown:
        raise TargetError(f"{target.source}: {where}: placeholder ${{{unknown[0]}}} has no "
                          f"value here; known: {', '.join(sorted(known))}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"{path}: no such target file") from None
    except IsADirectoryError:
        raise TargetError(f"{path}: a folder; give its {FILE_NAME}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from None


def load_target(path: str | Path) -> Target:
    """The target in ``path``: a maillab.toml, a pyproject.toml with [tool.maillab], or a
    folder holding either."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / FILE_NAME, path / "pyproject.toml"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise TargetError(f"{path}: no {FILE_NAME} or pyproject.toml in this folder")
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("maillab")
        if not isinstance(table, dict):
            raise TargetError(f"{path}: tool.maillab: no [tool.maillab] table")
        data = table
    target = parse_target(data, str(path.resolve()))
    text = path.read_bytes()
    return target.model_copy(update={"sha256": hashlib.sha256(text).hexdigest()})


@cache
def built_in() -> Target:
    """The lab's own five variants, described by the target file that ships with it."""
    return load_target(BUILT_IN_FILE)


# The variants the lab is measuring or reading: the built-in ones unless a bench or a run's
# results named another target's (activate). The scenarios, the capacity predictions, the
# profiles and the gate ask a variant's properties here, so they work for any target.
_ACTIVE: dict[str, Variant] = {}


def activate(variants: Mapping[str, Variant] | None) -> None:
    """Make ``variants`` (a target's) the ones variant_info answers for (None: the
    built-in target's)."""
    _ACTIVE.clear()
    _ACTIVE.update(variants or {})


def active_variants() -> Mapping[str, Variant]:
    return _ACTIVE or built_in().variants


def known_variants() -> list[str]:
    """The active target's variant names, in its file's order."""
    return list(active_variants())


def variant_info(name: str) -> Variant:
    """The active target's variant ``name``; a TargetError names the ones it has."""
    variants = active_variants()
    if name not in variants:
        raise TargetError(f"no variant {name!r}; this target has {', '.join(variants)}")
    return variants[name]


def sends_email(name: str) -> bool:
    """Whether the active target's variant sends email; a name it does not have (another app
    under load) is assumed to."""
    found = active_variants().get(name)
    return found.sends_email if found is not None else True
