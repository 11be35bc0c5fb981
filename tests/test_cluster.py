"""Scale-out on a real Ray cluster on loopback (a head and a worker node, 1 CPU each): `engine batch
--cluster` gives the local batch's files, and `engine train-many --cluster` trains a manifest; a node killed
in the middle of either loses nothing and leaves nothing half-written."""

from __future__ import annotations

import hashlib
import http.server
import json
import socketserver
import subprocess
import sys
import threading
import time

import cv2
import pytest
from cli_helpers import ENV, json_result, run_engine

from bench.local_cluster import LocalCluster
from engine.cli import main
from tests.conftest import ROOT
from tests.import_blocker import blocker_source

NAIVE = ("scream", "oil_tree", "pen_building", "watercolor_tree")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = LocalCluster(tmp_path_factory.mktemp("ray-logs")).start(workers=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def model_dir(tiny_models):
    return tiny_models["harmonization"]


def _folder(path, shared_images, n: int, size=(240, 180)):
    path.mkdir()
    for i in range(n):
        image = cv2.imread(str(shared_images / "harmonization" / f"{NAIVE[i % 4]}_naive.jpg"))
        cv2.imwrite(str(path / f"img{i:02d}.png"), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return path


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _local_batch(capsys, model_dir, inputs, out) -> dict:
    """The local batch, in this process (what the cluster's files are compared with)."""
    main(["batch", str(model_dir), "--input", str(inputs), "--output", str(out), "--json"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _engine(*args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine.cli", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_batch_on_two_workers_gives_the_local_files_reports_failures_and_resumes(
    cluster, model_dir, shared_images, tmp_path, capsys
):
    inputs = _folder(tmp_path / "in", shared_images, 4)
    (inputs / "broken.png").write_bytes(b"not an image")
    local = _local_batch(capsys, model_dir, inputs, tmp_path / "local")
    out = tmp_path / "out"
    args = ("batch", model_dir, "--input", inputs, "--output", out, "--cluster", cluster.address, "--json")
    result = json_result(run_engine(*args, "--workers", "2"))
    assert (result["done"], result["failed"]) == (4, 1) and local["failures"] == result["failures"]
    assert list(result["failures"]) == ["broken.png"] and "not an image" in result["failures"]["broken.png"]
    assert result["workers"] == {"actors": 2, "cpus": 1, "gpus": 0}
    assert _digest(out) == _digest(tmp_path / "local")  # byte for byte

    # Again, the folders given as URLs (file://, the one scheme testable here; s3:// and gs:// go through
    # the same pyarrow calls): only the missing output is made, the same bytes again.
    (out / "img01.png").unlink()
    urls = ("--input", inputs.as_uri(), "--output", out.as_uri())
    again = json_result(run_engine("batch", model_dir, *urls, "--cluster", cluster.address, "--json"))
    assert (again["done"], again["skipped"], again["failed"]) == (1, 3, 1)  # only the missing one again
    assert f"cannot read image {inputs.as_uri()}/broken.png: it is damaged" in again["failures"]["broken.png"]
    assert _digest(out) == _digest(tmp_path / "local")


def test_a_node_killed_mid_batch_loses_nothing(cluster, model_dir, shared_images, tmp_path, capsys):
    inputs = _folder(tmp_path / "in", shared_images, 12, size=(480, 360))
    out = tmp_path / "out"
    args = ("--input", inputs, "--output", out, "--cluster", cluster.address, "--workers", "2", "--json")
    proc = _engine("batch", model_dir, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    cluster.kill(cluster.nodes[-1])  # the worker node, with the actor on it
    stdout, stderr = proc.communicate(timeout=300)
    result = json.loads(stdout.strip().splitlines()[-1])
    cluster.add_node()  # for the tests after this one
    assert proc.returncode == 0 and result["done"] == 12, stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs.iterdir())  # no temporaries
    local = _local_batch(capsys, model_dir, inputs, tmp_path / "local")
    assert local["done"] == 12 and _digest(out) == _digest(tmp_path / "local")


def test_train_many_survives_a_killed_node_reports_a_bad_row_and_reuses(cluster, shared_images, tmp_path):
    h = shared_images / "harmonization"
    manifest = tmp_path / "catalogue.csv"
    manifest.write_text(
        "image,mode,preset,iters,seed,name\n"
        f"{h / 'scream.jpg'},harmonization,tiny,40,1,scream\n"
        f"{h / 'oil_tree.jpg'},harmonization,tiny,40,2,oil\n"
        f"{h / 'missing.jpg'},harmonization,tiny,40,3,missing\n"
        f"{h / 'scream.jpg'},harmonization,huge,40,4,bad-preset\n"
    )
    out = tmp_path / "models"
    proc = _engine("train-many", manifest, "--out", out, "--cluster", cluster.address, "--json")
    checkpoints = [out / f".training-{name}" / "checkpoint" / "state.pt" for name in ("scream", "oil")]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(p.is_file() for p in checkpoints) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    cluster.kill(cluster.nodes[-1])  # one of the two trainings was on it
    stdout, stderr = proc.communicate(timeout=400)
    # (No node is added back: the run below reuses both models on the head and the one worker left. A node
    # added here twice in four full-suite runs on 2026-12-06 never showed as active in `ray status`.)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and (result["trained"], result["reused"], result["failed"]) == (2, 0, 2), (
        stderr
    )
    assert "row 4: image" in result["error"] and "row 5: column preset" in result["error"]
    rows = json.loads((out / "train-many.json").read_text())["rows"]
    trained = [r for r in rows if r["status"] == "trained"]
    assert [r["name"] for r in trained] == ["scream", "oil"]
    assert [r["resumed"] for r in trained].count(True) == 1  # the one on the lost node, from its checkpoint
    assert sorted(p.name for p in out.iterdir()) == ["oil", "scream", "train-many.json"]  # no staging left
    for name in ("scream", "oil"):
        meta = json.loads((out / name / "model.json").read_text())
        assert meta["training"]["seed"] == {"scream": 1, "oil": 2}[name]

    again = json_result(
        run_engine("train-many", manifest, "--out", out, "--cluster", cluster.address, "--json")
    )
    assert (again["trained"], again["reused"], again["failed"]) == (0, 2, 2)


def test_cluster_errors_are_one_line(model_dir, shared_images, tmp_path):
    inputs = _folder(tmp_path / "in", shared_images, 1)
    no_ray = subprocess.run(
        [
            sys.executable,
            "-c",
            blocker_source("ray") + "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))",
            "batch", str(model_dir), "--input", str(inputs), "--output", str(tmp_path / "o"),
            "--cluster", "auto",
        ],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    expected = (
        "--cluster needs Ray, which is not installed: pip install 'singan-studio[cluster]' (from a checkout: "
        "pip install -e '.[cluster]')"
    )
    assert no_ray.returncode == 2 and no_ray.stderr.strip().splitlines() == [
        f"engine batch: error: {expected}"
    ]

    def batch_at(address: str):
        args = ("--input", inputs, "--output", tmp_path / "o", "--cluster", address)
        return run_engine("batch", model_dir, *args, timeout=180)

    with socketserver.TCPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{web.server_address[1]}"
        not_ray = batch_at(address)
        web.shutdown()
    assert not_ray.returncode == 2 and not_ray.stderr.strip().splitlines() == [
        f"engine batch: error: cannot connect to a Ray cluster at --cluster {address}: {address} answers, "
        "but not as a Ray head (give its GCS port, 6379 unless `ray start --port` set another, or "
        "ray://HOST:10001)"
    ]
    nobody = batch_at("127.0.0.1:9")
    assert (
        nobody.returncode == 2 and "cannot connect to a Ray cluster at --cluster 127.0.0.1:9" in nobody.stderr
    )
    assert not (tmp_path / "o").exists()
