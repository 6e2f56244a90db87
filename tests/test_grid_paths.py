"""Where paths point: a run started with relative paths is read the same from any other folder (eval, probe-layers),
while the grid's cells keep naming their places portably (model, $MINIBERT_DATA/..., out relative to the folder the
grid ran in, as the committed study's cells do)."""
import json
import os
import shutil

from helpers import load_script

from minibert.study import probe_layers
from minibert.study.grid import main as grid_main
from minibert.training.rundir import read_config

TRAIN, EVAL = load_script("train.py"), load_script("eval.py")


def test_a_run_with_relative_paths_is_read_from_another_folder(tmp_path, tiny_dir, data_root, monkeypatch, capsys):
    """`cd X && train --model m --data-dir data/ag_news --out r`, then eval and probe-layers of X/r from Y."""
    x, y = tmp_path / "X", tmp_path / "Y"
    (x / "data").mkdir(parents=True)
    y.mkdir()
    shutil.copytree(tiny_dir, x / "m")
    (x / "data" / "ag_news").symlink_to(data_root / "ag_news")
    monkeypatch.chdir(x)
    assert TRAIN.main(["--model", "m", "--dataset", "ag_news", "--data-dir", "data/ag_news", "--out", "r",
                       "--limit", "48", "--epochs", "1", "--lr", "5e-5", "--batch-size", "16", "--max-length", "32",
                       "--device", "cpu", "--save-model"]) == 0
    typed = json.loads((x / "r" / "config.json").read_text())
    assert (typed["args"]["model"], typed["args"]["data_dir"], typed["checkpoint"]) == ("m", "data/ag_news", "m")
    assert typed["origin"] == ".."  # the file keeps the paths as typed, and where they were typed

    monkeypatch.chdir(y)
    config = read_config(x / "r")
    assert (config["args"]["model"], config["args"]["data_dir"], config["checkpoint"]) == (
        str(x / "m"), str(x / "data" / "ag_news"), str(x / "m"))
    capsys.readouterr()
    assert EVAL.main([str(x / "r"), "--device", "cpu", "--json"]) == 0, capsys.readouterr().err
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    result = json.loads((x / "r" / "result.json").read_text())
    assert scores["weighted_f1"] == result["best"]["weighted_f1"]  # the run's best epoch, found from elsewhere
    probes = probe_layers.probe_layers(x / "r", max_train=32, max_test=16)
    assert len(probes["clean"]) == 7 and probes["n_test"] == 16

    shutil.rmtree(x / "data")  # the run's data moved away: named, with the flag that fixes it
    assert EVAL.main([str(x / "r"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (f"error: {x / 'r'} was trained on {x / 'data' / 'ag_news'} (its config.json), "
                                       "which is not a folder here; pass --data-dir with the dataset's folder\n")


def test_grid_cells_name_their_places_relative_to_where_the_grid_ran(tmp_path, minilm_dir, data_root, monkeypatch,
                                                                      capsys):
    """--list from the folder of --out: the command is `python -m minibert train`, run there, out relative to it."""
    monkeypatch.chdir(tmp_path)
    assert grid_main(["table2", "--quick", f"minilm={minilm_dir}", "--datasets", "ag_news", "--levels", "0",
                      "--out", "runs/g", "--list"]) == 0
    name, _, command = capsys.readouterr().out.splitlines()[0].split("\t")
    assert " -m minibert train " in command and "train.py" not in command
    assert f"--out runs/g/{name} " in command and "--cache-dir runs/g/token_cache" in command
    assert "--data-dir '$MINIBERT_DATA/ag_news'" in command and os.environ["MINIBERT_DATA"] == str(data_root)
