"""MediaPipe's rows of benchmarks/peers.py (peer_mediapipe.py) without MediaPipe's wheel: the mesh -> iBUG
table, the offset, and the LiteRT path on a face-mesh-shaped TFLite model the test writes (MediaPipe's
input and outputs: (1, 192, 192, 3) -> (1, 1, 1, 1404), (1, 1, 1, 1)), on synthetic 68-point faces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from facemark import codec
from facemark.data.synth import generate_dataset
from facemark.errors import ArtifactError, ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))   # the benchmark scripts import each other

import peer_mediapipe as mp  # noqa: E402
import peer_rows  # noqa: E402
import peers  # noqa: E402

SCALE = 1.3
SHIFT = np.array([24.0, -16.0])   # the stand-in model's "convention offset", crop pixels


def mesh_model(bias: np.ndarray, outputs: int = mp.MESH_POINTS * 3) -> bytes:
    """A TFLite flatbuffer: (1, 192, 192, 3) float32 x -> (1, 1, 1, outputs) bias + mean(x), then
    (1, 1, 1, 1) mean(x) (MediaPipe's second output is a face score)."""
    size = mp.INPUT_SIZE

    def tensor(shape, buffer, name, kind=schema.TensorType.FLOAT32):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), kind, buffer, name
        return t

    def operator(code, inputs, output, options_type, options):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = code, inputs, [output]
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op

    buffers = [schema.BufferT() for _ in range(3)]
    buffers[1].data = list(np.array([1, 2, 3], np.int32).tobytes())
    buffers[2].data = list(np.asarray(bias, np.float32).reshape(outputs).tobytes())
    tensors = [tensor([1, size, size, 3], 0, "input"), tensor([3], 1, "axes", schema.TensorType.INT32),
               tensor([1, 1, 1, 1], 0, "mean"), tensor([1, 1, 1, outputs], 2, "bias"),
               tensor([1, 1, 1, outputs], 0, "mesh")]
    codes = []
    for builtin in (schema.BuiltinOperator.MEAN, schema.BuiltinOperator.ADD):
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
        codes.append(code)
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = True
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [4, 2]
    graph.operators = [operator(0, [0, 1], 2, schema.BuiltinOptions.ReducerOptions, reducer),
                       operator(1, [3, 2], 4, schema.BuiltinOptions.AddOptions, schema.AddOptionsT())]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth68")
    generate_dataset(root, "ibug68", {"train": 10, "val": 4, "test": 5}, seed=3)   # one test face without a box
    return root


@pytest.fixture(scope="module")
def mean_inner(data_root) -> np.ndarray:
    """(51, 2) the training faces' mean inner points in the crop frame at SCALE, 192-px crop pixels."""
    faces = peer_rows.load_faces(data_root, "train", "synth", None)
    matrices = mp.crops_of(faces, SCALE)[1]
    return codec.apply_affine(faces.points[:, peer_rows.INNER], matrices).mean(axis=0)


@pytest.fixture(scope="module")
def model_path(mean_inner, tmp_path_factory) -> Path:
    """A stand-in mesh model whose inner iBUG points are always the training mean + SHIFT (+ mean(x))."""
    mesh = np.zeros((mp.MESH_POINTS, 3))
    for point, indices in zip(mean_inner + SHIFT, mp.IBUG_INNER_FROM_MESH):
        mesh[list(indices), :2] = point
    path = tmp_path_factory.mktemp("mesh") / "face_landmark.tflite"
    path.write_bytes(mesh_model(mesh))
    return path


def test_mapping_table_is_51_distinct_mesh_points():
    table = mp.IBUG_INNER_FROM_MESH
    flat = [index for indices in table for index in indices]
    assert len(table) == 51 == peer_rows.INNER.stop - peer_rows.INNER.start
    assert len(set(flat)) == len(flat) == 53 and all(0 <= index < mp.MESH_POINTS for index in flat)
    assert [len(indices) for indices in table].count(2) == 2   # two nose-bridge points average a pair
    assert table[mp.EYE_CORNERS[0]] == (33,) and table[mp.EYE_CORNERS[1]] == (263,)   # MediaPipe's eye corners
    mesh = np.arange(mp.MESH_POINTS * 3, dtype=np.float64).reshape(1, mp.MESH_POINTS, 3)
    inner = mp.mesh_to_inner(mesh)
    assert inner.shape == (1, 51, 2)
    np.testing.assert_array_equal(inner[0, 10], (mesh[0, 168, :2] + mesh[0, 6, :2]) / 2)
    np.testing.assert_array_equal(inner[0, 0], mesh[0, 70, :2])


def _posed(rng: np.random.Generator, base: np.ndarray, count: int) -> np.ndarray:
    """`count` rotated, scaled, moved copies of the (51, 2) `base` -> (count, 51, 2)."""
    angles, scales = rng.uniform(-0.6, 0.6, count), rng.uniform(40, 160, count)
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1).reshape(-1, 2, 2)
    return np.einsum("nij,pj->npi", rotations, base) * scales[:, None, None] + rng.uniform(0, 500, (count, 1, 2))


def test_offset_measured_on_one_split_removes_it_on_another():
    """A peer off by a fixed offset in each face's own frame: fitted on one set of faces, removed on another."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(51, 2))
    base[mp.EYE_CORNERS[0]], base[mp.EYE_CORNERS[1]] = (-1, 0), (1, 0)
    offset = rng.normal(scale=0.05, size=(51, 2))   # in units of the outer-eye-corner distance

    def with_truth(pred):
        """pred + offset along (eye line, its normal), times the outer-corner distance, + noise."""
        axis = pred[:, mp.EYE_CORNERS[1]] - pred[:, mp.EYE_CORNERS[0]]
        normal = np.stack([-axis[:, 1], axis[:, 0]], 1)
        truth = pred + offset[None, :, :1] * axis[:, None] + offset[None, :, 1:] * normal[:, None]
        return truth + rng.normal(scale=0.5, size=pred.shape)   # pixel noise the offset cannot explain

    train, test = _posed(rng, base, 200), _posed(rng, base, 50)
    train_truth, test_truth = with_truth(train), with_truth(test)
    fitted = mp.fit_offset(train, train_truth)
    np.testing.assert_allclose(fitted, offset, atol=2e-3)
    before = np.linalg.norm(test_truth - test, axis=-1).mean()
    after = np.linalg.norm(test_truth - mp.remove_offset(test, fitted), axis=-1).mean()
    assert after < 0.2 * before and after < 1.0   # only the 0.5-px noise is left
    np.testing.assert_allclose(mp.fit_offset(test, test), 0.0, atol=1e-12)
    np.testing.assert_allclose(mp.remove_offset(test, np.zeros((51, 2))), test)


def test_litert_path_maps_the_mesh_back_to_image_pixels(data_root, model_path, mean_inner):
    """The runner feeds pixels / 255 and its 192-px points go back through the crop: the crop-frame
    prediction is the model's constant plus the crop's mean input value, exactly."""
    faces = peer_rows.load_faces(data_root, "test", "synth", None)
    runner = mp.load_mesh_runner(model_path, threads=1)
    pred, crops, misses = mp.predict_inner(runner, faces, SCALE)
    assert pred.shape == (5, 51, 2) and crops.shape == (5, 192, 192, 3) and misses == 1
    matrices = mp.crops_of(faces, SCALE)[1]
    inputs = crops.reshape(5, -1).astype(np.float64).mean(axis=1) / 255.0
    assert ((inputs > 0.05) & (inputs < 1.0)).all()
    expected = mean_inner[None] + SHIFT + inputs[:, None, None]
    np.testing.assert_allclose(codec.apply_affine(pred, matrices), expected, atol=2e-3)


def test_peers_table_has_mediapipe_rows_without_a_jaw(data_root, model_path, tmp_path, capsys):
    code = peers.main([str(data_root), "--split", "test", "--detector", "synth", "--peers", "mediapipe",
                       "--mediapipe-model", str(model_path), "--mp-scale", str(SCALE), "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "peers.json").read_text())
    raw, fixed = report["rows"]
    assert (raw["row"], fixed["row"]) == ("MediaPipe", "MediaPipe, offset removed")
    assert report["peers"]["mediapipe"]["scale"] == SCALE and report["peers"]["mediapipe"]["offset_faces"] == 10
    assert report["data"]["offset_split"] == "train"
    for row in (raw, fixed):
        assert row["faces"] == 5 and row["ms_median"] > 0 and "nme_corner" not in row
        assert row["size_mb"] == pytest.approx(model_path.stat().st_size / 1e6)
        assert row["miss_note"] == "1 synth misses used the landmark box"
    assert fixed["nme_inner"] < 0.7 * raw["nme_inner"]   # the training split's offset removes the SHIFT
    markdown = (tmp_path / "peers.md").read_text()
    assert markdown in capsys.readouterr().out
    assert f"| MediaPipe | 5 | {raw['nme_inner']:.4f} | - | {raw['fr_inner']:.4f} |" in markdown
    csv_lines = (tmp_path / "peers.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(peer_rows.COLUMNS) and csv_lines[2].startswith('"MediaPipe, offset removed",5,')


def test_scale_sweep_gives_the_tables_figures_at_each_scale(data_root, model_path, capsys):
    code = mp.main([str(data_root), "--split", "test", "--detector", "synth", "--scales", "1.1", str(SCALE), "1.6",
                    "--mediapipe-model", str(model_path)])
    assert code == 0
    lines = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 1.")]
    sweep = {float(cells[1]): (float(cells[2]), float(cells[3])) for cells in lines}
    assert list(sweep) == [1.1, SCALE, 1.6]
    # the model's constant SHIFT in crop pixels is more image pixels in a larger crop
    assert sweep[1.1][0] < sweep[SCALE][0] < sweep[1.6][0]
    rows = peers.benchmark(data_root, "test", detector="synth", peers=("mediapipe",), mediapipe_model=model_path,
                           mp_scale=SCALE, warmup=0, runs=1)["rows"]
    assert sweep[SCALE] == (round(rows[0]["nme_inner"], 4), round(rows[1]["nme_inner"], 4))


def test_refusals_name_the_problem(data_root, model_path, tmp_path, monkeypatch, capsys):
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(mesh_model(np.zeros(10), outputs=10))
    with pytest.raises(ArtifactError, match="first output \\[1, 1, 1, 10\\]; MediaPipe's face mesh takes"):
        mp.load_mesh_runner(wrong, 1)
    with pytest.raises(ConfigError, match="none.tflite: MediaPipe face landmark model not found; pip install"):
        mp.load_mesh_runner(tmp_path / "none.tflite", 1)
    with pytest.raises(ConfigError, match="--offset-split test: the offset must be measured on another split"):
        peers.benchmark(data_root, "test", detector="synth", peers=("mediapipe",), offset_split="test")
    with pytest.raises(ConfigError, match="crop scale 0.0: must be > 0"):
        peers.benchmark(data_root, "test", detector="synth", peers=("mediapipe",), mediapipe_model=model_path,
                        mp_scale=0.0)
    monkeypatch.setitem(sys.modules, "mediapipe", None)   # what Python records for a missing module
    assert peers.main([str(data_root), "--detector", "synth", "--peers", "mediapipe"]) == 2
    assert capsys.readouterr().err.strip() == (f"peers: mediapipe (its face_landmark.tflite) is not installed: "
                                               f"{mp.INSTALL_HINT}")


def test_make_peers_installs_the_pinned_wheel_without_its_dependencies():
    makefile = (REPO / "Makefile").read_text()
    assert f"MEDIAPIPE := {mp.MEDIAPIPE_PIN}\n" in makefile
    assert "pip install --no-deps $(MEDIAPIPE)" in makefile and f"--no-deps {mp.MEDIAPIPE_PIN}" in mp.INSTALL_HINT
