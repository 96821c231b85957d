"""A model's life cycle, one job per module: load state and version lease (`loading`), call
admission (`admission`), and the typed listener the manager implements (`listener`)."""

from .admission import CallAdmission
from .listener import ModelListener
from .loading import LoadState, loading_model
from .state import init_life_cycle

__all__ = ["CallAdmission", "LoadState", "ModelListener", "init_life_cycle", "loading_model"]
