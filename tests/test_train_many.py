"""`engine train-many` here (without Ray): a manifest's rows trained into one folder, bad rows reported
while the others train, rows already trained reused, a finished row that was not moved in yet moved in."""

from __future__ import annotations

import json
import shutil

from engine.cli import main
from engine.serve.registry import Registry


def _run(capsys, *args) -> tuple[int, dict]:
    code = main(["train-many", *map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_trains_each_row_reports_bad_ones_and_reuses(shared_images, tmp_path, capsys):
    h = shared_images / "harmonization"
    shutil.copy(h / "scream.jpg", tmp_path / "scream.jpg")
    manifest = tmp_path / "catalogue.csv"
    manifest.write_text(
        "image,mode,preset,iters,name\n"
        "scream.jpg,harmonization,tiny,4,\n"  # relative to the manifest; the default name
        f"{h / 'oil_tree.jpg'},harmonization,tiny,4,oil\n"
        "scream.jpg,harmonization,tiny,4,again\n"  # the first row again, under another name: its model
        "scream.jpg,harmonization,tiny,5,oil\n"  # another model under a name already used
        "scream.jpg,generation,tiny,4,gen,extra\n"  # more cells than columns
        "scream.jpg,harmonization,tiny,0,zero\n"  # an option out of range
    )
    out = tmp_path / "models"
    code, result = _run(capsys, manifest, "--out", out)
    assert code == 1 and (result["trained"], result["reused"], result["failed"]) == (2, 1, 3), result
    error = result["error"]
    assert "row 5: name oil is also row 3's: give each row its own name column" in error
    assert "row 6: more cells than the header has columns" in error
    assert "row 7: column iters: Input should be greater than or equal to 1" in error
    rows = {r["row"]: r for r in json.loads((out / "train-many.json").read_text())["rows"]}
    assert rows[4]["status"] == "reused" and rows[4]["model"] == rows[2]["model"] == str(
        out / "scream-harmonization"
    )
    registry = Registry(out, create=False)
    assert sorted(i.model_id for i in registry.list()) == ["oil", "scream-harmonization"]  # an engine's store
    assert {i.task for i in registry.list()} == {"harmonization"}
    assert sorted(p.name for p in out.iterdir()) == ["oil", "scream-harmonization", "train-many.json"]

    # A run stopped after a row finished training but before it moved in: the next run moves it in
    # without training it again. (A row stopped mid-training continues from its checkpoint:
    # tests/test_cluster.py kills the node under one.)
    (out / "scream-harmonization").rename(out / ".training-scream-harmonization")
    (out / ".training-scream-harmonization" / "registry.json").unlink()
    code, result = _run(capsys, manifest, "--out", out)
    assert (result["trained"], result["reused"]) == (1, 2)  # the finished-but-not-moved-in run, moved in
    assert (out / "scream-harmonization" / "model.json").is_file()
    assert not (out / ".training-scream-harmonization").exists()
