"""A model's life cycle, one object per model (`LifeCycle`, held by composition; `Managed` is
what a model class forwards to it), one job per module: load state and version lease
(`loading`), call admission (`admission`), the state both share (`state`), and the typed
listeners: the manager's (`ModelListener`) and the stats' (`CallRecorder`) (`listener`)."""

from .admission import CallAdmission
from .listener import CallRecorder, ModelListener, set_recorder
from .loading import LoadState, loading_model
from .managed import LifeCycle, Managed, ManagedEmbedding
from .state import VariantChoice

__all__ = ["CallAdmission", "CallRecorder", "LifeCycle", "LoadState", "Managed", "ManagedEmbedding", "ModelListener", "VariantChoice",
           "loading_model", "set_recorder"]
