"""LangChain's own standard test suites, run on OnnxEmbeddingModel with the real sample."""

from __future__ import annotations

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
        # The model is found through LOCAL_MODELS_DIR when only its name is given.
        return (
            {"LOCAL_MODELS_DIR": str(SAMPLES_DIR)},
            {"model_name": EMBEDDING_SAMPLE},
            {"model_name": EMBEDDING_SAMPLE},
        )


class TestOnnxEmbeddingsIntegration(_SampleModel, EmbeddingsIntegrationTests):
    pass
