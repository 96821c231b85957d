"""LangChain's own standard test suites, run on OnnxEmbeddingModel with the real sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from ortmodels.runtime.embeddings import OnnxEmbeddingModel

from .conftest import EMBEDDING_SAMPLE, SAMPLES_DIR

pytestmark = pytest.mark.slow

PARAMS = {"model_path": str(SAMPLES_DIR / EMBEDDING_SAMPLE), "device": "cpu"}


class _SampleModel:
    @property
    def embeddings_class(self) -> type[OnnxEmbeddingModel]:
        return OnnxEmbeddingModel

    @property
    def embedding_model_params(self) -> dict:
        return PARAMS


class TestOnnxEmbeddingsUnit(_SampleModel, EmbeddingsUnitTests):

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        # Given only a name, the model is found in LOCAL_MODELS_DIR.
        return (
            {"LOCAL_MODELS_DIR": "/srv/elsewhere"},
            {"model_name": EMBEDDING_SAMPLE},
            {"model_name": EMBEDDING_SAMPLE, "model_path": Path("/srv/elsewhere") / EMBEDDING_SAMPLE},
        )


class TestOnnxEmbeddingsIntegration(_SampleModel, EmbeddingsIntegrationTests):
    pass
