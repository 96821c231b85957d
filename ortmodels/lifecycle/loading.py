"""Loading and unloading a model, its export version lease, and telling its listener.

Load and unload take the model's lock; the listener (the manager) is told before a load
and after loads, unloads and calls, never while the lock is held, so two models loading at
once never wait on each other.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..errors import ModelBusyError
from .listener import recorder
from .memory import trim_heap
from .state import LifeCycleState, VariantChoice

if TYPE_CHECKING:
    from .listener import ModelListener

_loading: ContextVar[Any] = ContextVar("ortmodels_loading_model", default=None)
#: The model whose ``load()`` is running in this context, for `open_variant` to attach to.


def loading_model() -> Any:
    """The model whose ``load()`` is running in this thread or task, if any."""
    return _loading.get()


class LoadState(LifeCycleState):
    """load / unload / is_loaded, the version lease and the listener; thread-safe.

    The owner's ``_load``/``_unload`` open and release what it needs; ``_listener`` (the
    `ModelListener`, usually the `ModelManager` that caches the model) is told of loads,
    unloads and uses so it can apply its memory budget and keep-alive.
    """

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    @property
    def active_calls(self) -> int:
        """Calls running on this model right now."""
        return self._active

    @property
    def loaded_variant(self) -> str | None:
        """The precision that was opened (``fp32``, ``int4``, ...), once loaded by ortmodels' classes."""
        return self._opened.variant if self._opened is not None else None

    @property
    def loaded_version(self) -> str | None:
        """The export version that was opened, once loaded by ortmodels' classes."""
        return self._opened.info.version if self._opened is not None else None

    @property
    def last_memory_bytes(self) -> int:
        """What the model held when last loaded: the room to make before loading it again."""
        return self._last_memory

    @property
    def loaded_device(self) -> str | None:
        """The device the opened variant runs on, once loaded by ortmodels' classes."""
        return self._opened.device if self._opened is not None else None

    def set_listener(self, listener: ModelListener | None) -> None:
        """Who is told of this model's loads, unloads and calls (the manager that caches it)."""
        self._listener = listener

    def variant_bytes(self) -> int:
        """Bytes of the opened variant's files (0: none opened, or not loaded)."""
        return self._opened.size if (self._loaded and self._opened is not None) else 0

    def set_chooser(self, chooser: Any, first: VariantChoice | None = None) -> None:
        """How each load chooses what to open (``chooser()``), and the choice the first load opens."""
        with self._lock:
            self._drop_choice()
            self._chooser, self._choice = chooser, first

    def choose(self) -> VariantChoice | None:
        """The next load's choice, made now if not yet (``None``: the model makes its own)."""
        with self._lock:
            if self._choice is None and self._chooser is not None and not self._loaded:
                self._choice = self._chooser()
            return self._choice

    def take_choice(self) -> VariantChoice | None:
        """The choice this load opens (`open_variant`); its lease then goes with what is opened."""
        with self._lock:
            choice = self.choose()
            self._choice = None
            return choice

    def expected_bytes(self) -> int:
        """What the next load will hold at least (the chosen variant's files); 0 if unknown."""
        choice = self.choose()
        return choice.size if choice is not None else 0

    def forget_choice(self) -> None:
        """Drop a choice made before a rollback switched the ``onnx`` link: the load chooses again."""
        with self._lock:
            self._drop_choice()

    def _drop_choice(self) -> None:
        choice, self._choice = self._choice, None
        if choice is not None:
            choice.release()

    def attach_variant(self, opened: Any, lease: Any) -> None:
        """Called by `open_variant` during `_load`: what was opened, and the version lease."""
        if self._lease is not None:
            self._lease.release()
        self._opened, self._lease = opened, lease

    def load(self) -> Any:
        """Load the model if it is not loaded yet; returns ``self`` so calls can chain.

        The manager is told before (to make room within its memory budget) and after,
        never while this model's lock is held, so two models loading at once cannot wait
        on each other.
        """
        owner = self.owner
        if self._loaded:
            return owner
        if self._listener is not None:
            try:
                self._listener.model_loading(owner)
            except BaseException:
                with self._lock:
                    self._drop_choice()
                raise
        with self._lock:
            if self._loaded:
                return owner
            started = time.perf_counter()
            token = _loading.set(owner)
            try:
                owner._load()
            except BaseException:
                self._release_variant()
                raise
            finally:
                _loading.reset(token)
            self._loaded = True
            seconds = time.perf_counter() - started
            self._last_memory = owner.memory_bytes()
            key = None if (calls := recorder()) is None else calls.key_of(owner)
        trim_heap()  # outside the lock and the load time: it walks every arena of the heap
        if calls is not None:
            calls.record_load(key, owner, seconds, self._last_memory)
        if self._listener is not None:
            self._listener.model_loaded(owner)
        return owner

    def unload(self, timeout: float | None = None) -> None:
        """Release the model's memory once running calls have finished; a later call loads it again.

        New calls wait while an unload waits, so a busy model cannot put it off forever. With
        a ``timeout`` (seconds), an unload that still finds calls running then gives up and
        raises `ModelBusyError` naming them (a stream that was opened and never read, say);
        the model stays loaded and the waiting calls go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._draining += 1
            try:
                self._wait_for_calls(deadline, timeout, "or unload with a longer timeout")
                if not self._loaded:
                    self._drop_choice()  # a choice never opened: its version lease goes too
                    return
                self.owner._unload()
                self._loaded = False
                self._release_variant()
            finally:
                self._draining -= 1
                self._idle.notify_all()
        if self._listener is not None:
            self._listener.model_unloaded(self.owner)

    def _wait_for_calls(self, deadline: float | None, timeout: float | None, retry: str) -> None:
        """With the lock held and the drain counted: wait until no call runs, or raise
        `ModelBusyError` naming the calls once ``deadline`` (``time.monotonic()``) has passed."""
        while self._active:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ModelBusyError(
                    f"Could not unload {getattr(self.owner, 'model_name', None) or type(self.owner).__name__} "
                    f"within {timeout or 0:g} s: {self._active} call(s) still hold it "
                    f"({self._describe_holders()}). Finish or close those calls (a stream "
                    f"must be read to its end or closed), {retry}."
                )
            self._idle.wait(left)

    def _describe_holders(self) -> str:
        now = time.monotonic()
        calls = sorted(self._holders.values(), key=lambda h: h.started)
        return "; ".join(f"{h.what} from thread {h.thread!r}, running {now - h.started:.1f} s" for h in calls) or "?"

    def hold_unless_version(self, version: str, deadline: float | None, timeout: float | None) -> bool:
        """Stop new calls and wait for the running ones, unless ``version`` is loaded already.

        What a rollback takes before it switches the ``onnx`` link, so that nothing can fail
        after the switch: held, the model stays as it is (loaded or not) and takes no call until
        `release_hold`. A load in progress is waited for (it holds the lock). Past ``deadline``
        (``time.monotonic()``), `ModelBusyError` names the calls and nothing stays held.
        Returns whether the model is now held.
        """
        with self._lock:
            if self._loaded and self.loaded_version in (None, version):
                return False
            self._draining += 1
            self._drop_choice()  # made from the link being switched: the next load chooses again
            try:
                self._wait_for_calls(deadline, timeout, "then roll back again, or with a longer timeout")
            except BaseException:
                self._draining -= 1
                self._idle.notify_all()
                raise
        return True

    def release_hold(self, unload_unless: str | None) -> None:
        """End a `hold_unless_version`; with ``unload_unless``, first unload a loaded version other
        than it (no call can run while held, so this never waits). ``None``: unload nothing."""
        unloaded = False
        with self._lock:
            try:
                if (unload_unless is not None and self._loaded
                        and self.loaded_version not in (None, unload_unless)):
                    self.owner._unload()
                    self._loaded = False
                    self._release_variant()
                    unloaded = True
            finally:
                self._draining -= 1
                self._idle.notify_all()
        if unloaded and self._listener is not None:
            self._listener.model_unloaded(self.owner)

    def unload_if_idle(self, still_wanted: Any = None) -> bool:
        """Unload now if no call is running or waiting and ``still_wanted()`` agrees; never blocks.

        What the manager's budget and keep-alive use: a busy model is skipped, not waited for.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self._loaded or self._active or self._draining or self._pending:
                return False
            if still_wanted is not None and not still_wanted():
                return False
            self.owner._unload()
            self._loaded = False
            self._release_variant()
        finally:
            self._lock.release()
        if self._listener is not None:
            self._listener.model_unloaded(self.owner)
        return True

    def _release_variant(self) -> None:
        self._drop_choice()
        if self._lease is not None:
            self._lease.release()
        self._lease = None
        self._opened = None

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
