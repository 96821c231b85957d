"""Public names imported on first use, and the extra to install when an optional part is missing."""

from __future__ import annotations

import sys

import pytest

import ortmodels
import ortmodels.serve
import ortmodels.serve.ray
from ortmodels.errors import MissingDependencyError


@pytest.mark.parametrize(("package", "name", "library", "message"), [
    (ortmodels.serve, "create_app", "fastapi", "The server needs fastapi: pip install 'ortmodels[serve]'."),
    (ortmodels.serve.ray, "build_app", "ray", "Ray Serve needs ray: pip install 'ortmodels[ray]'."),
])
def test_a_missing_optional_library_names_the_extra(monkeypatch: pytest.MonkeyPatch, package: object, name: str,
                                                    library: str, message: str) -> None:
    monkeypatch.delattr(package, name, raising=False)  # not imported yet, as in a fresh process
    for module in [m for m in sys.modules if m.startswith(package.__name__ + ".")]:  # type: ignore[attr-defined]
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, library, None)  # what Python does for a package that is not installed
    with pytest.raises(MissingDependencyError) as caught:
        getattr(package, name)
    assert str(caught.value) == message


def test_public_names_are_kept_once_imported_and_unknown_ones_are_refused() -> None:
    assert ortmodels.ModelManager is vars(ortmodels)["ModelManager"]
    with pytest.raises(AttributeError, match="module 'ortmodels.serve' has no attribute 'nothing'"):
        ortmodels.serve.nothing  # noqa: B018


def test_rays_builder_types_the_strings_rays_cli_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve run ortmodels.serve.ray:builder replicas=2 cpus=1.5 ...`` gives one dict of strings."""
    from ortmodels.serve.ray import deployments

    seen: dict[str, object] = {}
    monkeypatch.setattr(deployments, "build_app", lambda **kwargs: seen.update(kwargs) or "app")
    built = ortmodels.serve.ray.builder({"models": "a,b", "replicas": "2", "cpus": "1.5",
                                         "health_check_period_s": "5"})
    assert built == "app"
    assert seen == {"models": "a,b", "replicas": 2, "cpus": 1.5, "health_check_period_s": 5.0}
