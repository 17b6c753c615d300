"""Plugin discovery: a fresh pluggy manager, typed registries and plugin listings.

Nothing here runs at import time. ``make_plugin_manager()`` loads the ``verifily``
entry-point group (built-ins are registered there exactly like third-party plugins);
``load_registries(pm)`` asks every plugin to fill the typed registries.

The plugin kinds are listed once, as the fields of :class:`Registries`: the attribute
(``model_loaders``), the base class of its objects (``Registry[ModelLoader]``) and the
kind's name (``model_loader``). :data:`PLUGIN_KINDS` is read from them, and each kind is
registered through the hook ``verifily_register_<attribute>``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import typing
from typing import Any, Generic, Iterable, Iterator, TypeVar

import attrs
import pluggy

from verifily_core import hookspecs
from verifily_core.errors import ConfigError
from verifily_core.interfaces import ComputeBackend, Metric, ModelLoader, Slicer, Task

ENTRYPOINT_GROUP = "verifily"
BLOCK_ENV = "VERIFILY_BLOCK_PLUGINS"
"""Comma-separated plugin names (entry-point names) that must not be loaded."""
DIRECT = "<direct>"
"""The owner of objects added to a registry outside :meth:`Registry.on_behalf_of`."""

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one plugin kind. Rejects duplicates and wrong types.

    :param kind: the kind's display name (``"metric"``).
    :param base: the class every registered object must be an instance of.
    """

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        self._plugin = DIRECT

    @contextlib.contextmanager
    def on_behalf_of(self, plugin: str) -> Iterator[Registry[T]]:
        """Attribute what is added inside the ``with`` block to ``plugin`` (in
        :meth:`owner`, :meth:`by_plugin` and error messages)."""
        previous, self._plugin = self._plugin, plugin
        try:
            yield self
        finally:
            self._plugin = previous

    def add(self, obj: T, name: str | None = None) -> None:
        """Register ``obj`` under ``name`` (default: ``obj.name``)."""
        if not isinstance(obj, self.base):
            raise ConfigError(
                f"plugin '{self._plugin}' registered {obj!r} as a {self.kind}, "
                f"but it is not a {self.base.__module__}.{self.base.__qualname__}"
            )
        name = name or getattr(obj, "name", None)
        if not name:
            raise ConfigError(f"plugin '{self._plugin}' registered a {self.kind} without a name")
        if name in self._items:
            raise ConfigError(
                f"{self.kind} '{name}' is registered twice: by plugin '{self._owners[name]}' "
                f"and by plugin '{self._plugin}'; block one with {BLOCK_ENV}"
            )
        self._items[name] = obj
        self._owners[name] = self._plugin

    def get(self, name: str) -> T:
        """Return the object named ``name`` or raise a ConfigError listing what exists."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """``unknown metric 'bleuu'; available: ...`` with a close match when there is one."""
        available = ", ".join(sorted(self._items)) or "(none installed)"
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; available: {available}"

    def owner(self, name: str) -> str:
        """The plugin that registered ``name``."""
        return self._owners[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def by_plugin(self, plugin: str) -> list[str]:
        """Names registered by one plugin, sorted."""
        return sorted(n for n, p in self._owners.items() if p == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


_KIND = "verifily_kind"


@attrs.frozen
class Registries:
    """One registry per plugin kind, filled by all loaded plugins, plus the manager that
    filled them.

    The fields after ``pm`` are the table of plugin kinds (see :data:`PLUGIN_KINDS`): a new
    kind is one field here, a base class in :mod:`verifily_core.interfaces` and its
    ``verifily_register_<field>`` hook in :mod:`verifily_core.hookspecs`.
    """

    pm: pluggy.PluginManager
    tasks: Registry[Task] = attrs.field(metadata={_KIND: "task"})
    model_loaders: Registry[ModelLoader] = attrs.field(metadata={_KIND: "model_loader"})
    metrics: Registry[Metric] = attrs.field(metadata={_KIND: "metric"})
    slicers: Registry[Slicer] = attrs.field(metadata={_KIND: "slicer"})
    backends: Registry[ComputeBackend] = attrs.field(metadata={_KIND: "backend"})

    @property
    def hook(self) -> Any:
        """The manager's hook relay, for lifecycle hooks."""
        return self.pm.hook

    def all(self) -> dict[str, Registry[Any]]:
        """Registries by kind name (``task``, ``model_loader``, ...)."""
        return {kind.name: getattr(self, kind.attribute) for kind in PLUGIN_KINDS}


@attrs.frozen
class PluginKind:
    """One kind of plugin object, as a field of :class:`Registries` declares it."""

    name: str
    """The kind's name (``model_loader``), as ``verifily plugins`` prints it."""
    base: type
    """The class every registered object must be an instance of."""
    attribute: str
    """The :class:`Registries` attribute holding its registry (``model_loaders``)."""

    @property
    def label(self) -> str:
        """The name in messages: ``unknown model loader 'x'``."""
        return self.name.replace("_", " ")

    @property
    def hook_name(self) -> str:
        """The registration hook (``verifily_register_model_loaders``)."""
        return f"verifily_register_{self.attribute}"


def _plugin_kinds() -> tuple[PluginKind, ...]:
    hints = typing.get_type_hints(Registries)
    return tuple(
        PluginKind(name=f.metadata[_KIND], base=typing.get_args(hints[f.name])[0], attribute=f.name)
        for f in attrs.fields(Registries)
        if _KIND in f.metadata
    )


PLUGIN_KINDS: tuple[PluginKind, ...] = _plugin_kinds()
"""Every plugin kind, in the order of the :class:`Registries` fields."""


def blocked_plugins() -> list[str]:
    """Plugin names blocked through the ``VERIFILY_BLOCK_PLUGINS`` environment variable."""
    return [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]


def make_plugin_manager(entrypoints: bool = True, plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    :param entrypoints: load every plugin of the ``verifily`` entry-point group
        (built-ins included), except those named in ``VERIFILY_BLOCK_PLUGINS``.
    :param plugins: extra plugin objects (modules or class instances) to register,
        e.g. throwaway plugins in tests.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for blocked in blocked_plugins():
        pm.set_blocked(blocked)
    if entrypoints:
        pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP)
    for plugin in plugins:
        name = getattr(plugin, "plugin_name", None) or getattr(plugin, "__name__", None)
        if name in blocked_plugins():
            continue
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm


def each_plugin(pm: pluggy.PluginManager, hook_name: str) -> Iterator[tuple[str, Any]]:
    """``(plugin name, that plugin's own caller of the hook)`` for every plugin implementing
    ``hook_name``, in registration order, so results can be attributed to their plugin.

    The callers come from ``pm.subset_hook_caller``: pluggy still checks the arguments and
    runs hook wrappers around each plugin's call.
    """
    impls = [i for i in getattr(pm.hook, hook_name).get_hookimpls() if not (i.hookwrapper or i.wrapper)]
    for impl in impls:
        others = [other.plugin for other in impls if other is not impl]
        yield impl.plugin_name, pm.subset_hook_caller(hook_name, remove_plugins=others)


def load_registries(pm: pluggy.PluginManager | None = None) -> Registries:
    """Ask every plugin to register its objects and return the filled registries.

    Each plugin's registration hook is called on its own, so a duplicate name error can
    name both plugins.
    """
    pm = pm or make_plugin_manager()
    registries: dict[str, Registry[Any]] = {}
    for kind in PLUGIN_KINDS:
        registry: Registry[Any] = Registry(kind.label, kind.base)
        for plugin, call in each_plugin(pm, kind.hook_name):
            with registry.on_behalf_of(plugin):
                call(registry=registry)
        registries[kind.attribute] = registry
    return Registries(pm=pm, **registries)


def collect_commands(pm: pluggy.PluginManager, reserved: Iterable[str] = ()) -> dict[str, tuple[str, Any]]:
    """``{command name: (plugin name, click command)}`` of what plugins add through
    ``verifily_register_commands``.

    :param reserved: names already in use (the built-in commands).
    :raises ConfigError: a name taken twice, naming the plugin (and the other owner).
    """
    import click

    owners = {name: "verifily (built in)" for name in reserved}
    commands: dict[str, tuple[str, Any]] = {}
    for name, call in each_plugin(pm, "verifily_register_commands"):
        group = click.Group()
        call(cli=group)
        for cmd_name, cmd in group.commands.items():
            if cmd_name in owners:
                raise ConfigError(f"plugin '{name}' adds the command '{cmd_name}', which {owners[cmd_name]} "
                                  f"already provides; block one with {BLOCK_ENV}")
            owners[cmd_name] = f"plugin '{name}'"
            commands[cmd_name] = (name, cmd)
    return commands


def describe_plugins(regs: Registries) -> list[dict[str, Any]]:
    """One record per loaded plugin: name, distribution, version and what it registers."""
    dists = {id(plugin): dist for plugin, dist in regs.pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(regs.pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        registers = {kind: reg.by_plugin(name) for kind, reg in regs.all().items() if reg.by_plugin(name)}
        hooks = sorted(
            h.name
            for h in regs.pm.get_hookcallers(plugin) or []
            if not h.name.startswith("verifily_register_")
        )
        out.append(
            {
                "name": name,
                "distribution": dist.project_name if dist else None,
                "version": dist.version if dist else None,
                "registers": registers,
                "hooks": hooks,
            }
        )
    return out
