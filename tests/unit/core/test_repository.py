from __future__ import annotations

import asyncio
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelport.clock import ManualClock
from modelport.core import repository
from modelport.core.discovery import RuntimeTable
from modelport.core.registry import VersionState
from modelport.core.service import InferenceService
from modelport.errors import ConfigError, ModelNotFound, ModelNotReady, VersionNotFound
from tests.conftest import registry_for


def make_repo(root: Path, yaml_text: str = "") -> Path:
    data = load_iris()
    for version in ("1", "2", "10"):
        folder = root / "iris" / version
        folder.mkdir(parents=True)
        joblib.dump(
            LogisticRegression(max_iter=300).fit(data.data, data.target), folder / "model.joblib"
        )
    if yaml_text:
        (root / "iris" / "model.yaml").write_text(yaml_text)
    return root


def test_repository_layout_versions_and_model_yaml(tmp_path: Path) -> None:
    root = make_repo(
        tmp_path,
        "features: [sl, sw, pl, pw]\nlabels: [a, b, c]\n"
        "aliases: {stable: '2'}\nbatching: {max_batch_size: 16}\n",
    )
    (source,) = repository.from_repository(root)
    assert [v.version for v in source.versions] == ["1", "2", "10"]
    assert source.aliases == {"stable": "2"}

    async def main() -> None:
        registry = registry_for([source])
        assert registry.get("iris").versions["1"].state is VersionState.LOADING
        with pytest.raises(ModelNotReady):
            registry.resolve("iris")
        await registry.load_all()
        assert registry.all_ready()
        assert registry.resolve("iris").version == "10"  # latest, numerically
        assert registry.resolve("iris", "stable").version == "2"
        served = registry.resolve("iris", "1")
        assert served.signature is not None
        assert served.signature.inputs[0].names == ("sl", "sw", "pl", "pw")
        assert served.signature.labels == ("a", "b", "c")
        assert served.batcher is not None and served.batcher.policy.max_batch_size == 16
        with pytest.raises(VersionNotFound):
            registry.resolve("iris", "3")
        with pytest.raises(ModelNotFound):
            registry.resolve("rose")
        service = InferenceService(
            registry, ManualClock(), default_timeout_s=5, max_request_rows=10
        )
        result = await service.predict("iris", None, {"input": np.array([[5.1, 3.5, 1.4, 0.2]])})
        assert result.version == "10" and result.outputs["label"].tolist() == [0]
        await registry.close()
        assert registry.get("iris").versions["1"].state is VersionState.UNLOADED

    asyncio.run(main())


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("colour: red\n", "unknown keys ['colour']"),
        ("isolation: vm\n", "'vm' is not a valid Isolation"),
        ("batching: {max_batch: 3}\n", "unexpected keyword argument"),
        ("batching: 7\n", "'batching' must be a mapping"),
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_model_yaml_is_a_clear_config_error(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    make_repo(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        repository.from_repository(tmp_path)


def test_alias_and_default_must_point_somewhere(tmp_path: Path) -> None:
    make_repo(tmp_path, "aliases: {prod: '7'}\n")
    with pytest.raises(ConfigError, match="alias 'prod' points at missing version '7'"):
        registry_for(repository.from_repository(tmp_path))


def test_wrong_feature_count_in_yaml_fails_the_version_not_the_server(tmp_path: Path) -> None:
    make_repo(tmp_path, "features: [a, b]\n")

    async def main() -> None:
        registry = registry_for(repository.from_repository(tmp_path))
        await registry.load_all()
        version = registry.get("iris").versions["1"]
        assert version.state is VersionState.FAILED
        assert "lists 2 names but the model takes 4" in (version.error or "")
        assert not registry.all_ready()
        with pytest.raises(ModelNotReady, match="failed"):
            registry.resolve("iris", "1")
        await registry.close()

    asyncio.run(main())


def test_single_files_and_name_rules(tmp_path: Path) -> None:
    path = tmp_path / "my-model.joblib"
    joblib.dump(LogisticRegression().fit([[0], [1]], [0, 1]), path)
    (source,) = repository.from_files([path])
    assert source.name == "my-model" and source.versions[0].version == "1"
    with pytest.raises(ConfigError, match="no such model file"):
        repository.from_files([tmp_path / "missing.onnx"])
    with pytest.raises(ConfigError, match="invalid model name"):
        repository.check_name("../etc")


def test_version_folder_needs_exactly_one_artifact(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "a.onnx").write_bytes(b"")
    (folder / "b.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="expected one model artifact"):
        repository.from_repository(tmp_path)


def test_an_executor_started_for_a_version_that_then_fails_is_still_closed(
    tmp_path: Path,
) -> None:
    """A process executor's workers run once the factory returns; a model.yaml that then
    fails the signature (two labels for three classes) must not leave them running."""
    (source,) = repository.from_repository(
        make_repo(tmp_path, "isolation: process\nlabels: [a, b]\n")
    )
    closed: list[object] = []

    class Started:
        slots = 1

        async def run(self, batch: object) -> object:
            raise AssertionError("a failed version gets no batches")

        async def close(self) -> None:
            closed.append(self)

    async def factory(
        runtime: str, artifact: Path, config: object, board: object = None
    ) -> tuple[object, Started]:
        loaded = RuntimeTable.discover().get(runtime).load(artifact, config)
        return loaded.signature, Started()

    async def main() -> None:
        registry = registry_for([source], process_factory=factory)
        await registry.load_all()
        versions = registry.get("iris").versions.values()
        assert {v.state for v in versions} == {VersionState.FAILED}
        assert all("2 classes but the model outputs 3" in (v.error or "") for v in versions)
        await registry.close()

    asyncio.run(main())
    assert len(closed) == 3
