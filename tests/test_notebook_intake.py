"""The notebook intake: a filled-in lecture notebook converted into exercise files and graded as any submission.

Most tests convert a notebook, load the exercise file it gave, call its function with
the inputs the grader prepares (``course.backprop``) and grade what it returns with the
grader's own grading; the ways a call ends ("not started", an error at a line) are
read from the sandbox's own call, run in this process. One e2e test grades a notebook
through ``gradcheck-kit grade``.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit.autograder.integrity.scan import scan_source
from gradcheck_kit.autograder.notebook import NotebookError, submission_from_notebook
from gradcheck_kit.autograder.notebook.reading import neutralise_magics
from gradcheck_kit.cli import main
from gradcheck_kit.course import backprop
from gradcheck_kit.course.catalogue import EXERCISES, Hints
from gradcheck_kit.makemore.model import GRADED, Config, Forward, build
from gradcheck_kit.report import EXACT, INHERITED, NOT_STARTED, OK, WRONG, Report
from gradcheck_kit.sandbox.call import Call, execute
from gradcheck_kit.sandbox.loading import load_module
from gradcheck_kit.sandbox.outcome import Outcome

HERE = Path(__file__).resolve().parent
FILLED = HERE / "notebooks" / "backprop_ninja_filled.ipynb"
SOLUTIONS = HERE.parent / "solutions"
#: Sizes unlike the notebook's: a value copied from the notebook (n_embd = 10 in the training cell) shows here.
OTHER = Config(n=5, block_size=4, n_embd=3, n_hidden=7, vocab_size=11)
NOTEBOOK = Config()
PASSING = {EXACT, OK}


def write_notebook(folder: Path, *cells: str | tuple[str, str], name: str = "student.ipynb", **metadata: Any) -> Path:
    """An nbformat 4 notebook of code cells (text) and markdown cells (``("md", text)``), as Jupyter saves it."""
    raw = []
    for count, cell in enumerate(cells, start=1):
        if isinstance(cell, tuple):
            raw.append({"cell_type": "markdown", "metadata": {}, "source": cell[1].splitlines(keepends=True)})
        else:
            raw.append(
                {
                    "cell_type": "code",
                    "execution_count": count,
                    "metadata": {},
                    "outputs": [],
                    "source": cell.splitlines(keepends=True),
                }
            )
    path = folder / name
    document = {"cells": raw, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@functools.cache
def forward(config: Config = NOTEBOOK) -> Forward:
    return build(config)


def grade(folder: Path, key: str, config: Config = NOTEBOOK) -> Report:
    """Run exercise ``key``'s function of ``folder`` on the grader's inputs here, and grade it as the grader does."""
    fwd = forward(config)
    prepared = backprop.chunked(fwd, Hints(), 0.0) if key == "ex1" else backprop.fused(key, fwd, Hints(), 0.0)
    module = load_module(folder / EXERCISES[key].file)
    return prepared.grade(getattr(module, EXERCISES[key].function)(*prepared.args))


def call(folder: Path, key: str) -> Outcome:
    """The outcome of the sandbox's call of exercise ``key``'s function, made in this process."""
    fwd = forward()
    prepared = backprop.chunked(fwd, Hints(), 0.0) if key == "ex1" else backprop.fused(key, fwd, Hints(), 0.0)
    path = str(folder / EXERCISES[key].file)
    return execute(Call(path, EXERCISES[key].function, prepared.args, {}, "cpu")).outcome


def verdicts(report: Report) -> dict[str, str]:
    return {row.name: row.verdict for row in report.rows}


# Exercise cells as a student may write them, unlike solutions/: one-hot matrices, index_add_, the
# softmax from the forward pass's own probs, the batchnorm through bndiff and bnvar.
EX1_VECTORISED = """\
# Exercise 1: backprop through the whole thing manually
dlogprobs = -F.one_hot(Yb, num_classes=vocab_size).float() / n
dprobs = dlogprobs / probs
dcounts_sum_inv = (dprobs * counts).sum(1, keepdim=True)
dcounts_sum = -counts_sum**-2 * dcounts_sum_inv
dcounts = dprobs * counts_sum_inv + dcounts_sum.expand_as(counts)
dnorm_logits = dcounts * counts
dlogit_maxes = -dnorm_logits.sum(1, keepdim=True)
dlogits = dnorm_logits + (logits == logit_maxes).float() * dlogit_maxes
dh, dW2, db2 = dlogits @ W2.T, h.T @ dlogits, dlogits.sum(0)
dhpreact = dh * (1 - h * h)
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dbnraw = bngain * dhpreact
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
dbnvar = -0.5 * (bnvar + 1e-5) ** -1.5 * dbnvar_inv
dbndiff2 = torch.ones_like(bndiff2) * dbnvar / (n - 1)
dbndiff = bnvar_inv * dbnraw + 2 * bndiff * dbndiff2
dbnmeani = -dbndiff.sum(0, keepdim=True)
dhprebn = dbndiff + dbnmeani / n
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
dC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))
cmp('logprobs', dlogprobs, logprobs)
cmp('C', dC, C)
"""

EX2_FROM_PROBS = """\
# backward pass
dlogits = probs.clone()
dlogits[range(n), Yb] -= 1
dlogits = dlogits / n
cmp('logits', dlogits, logits)
"""

EX3_THROUGH_BNDIFF = """\
# calculate dhprebn given dhpreact
dhprebn = bngain * (bnvar + 1e-5) ** -0.5 / n * (
    n * dhpreact - dhpreact.sum(0, keepdim=True)
    - n / (n - 1) * bndiff * (bnvar + 1e-5) ** -1 * (dhpreact * bndiff).sum(0, keepdim=True)
)
cmp('hprebn', dhprebn, hprebn)
"""

TRAINING_ONE_HOT = """\
# Exercise 4: putting it all together!
n_embd = 10
max_steps = 200000
lossi = []
with torch.no_grad():
    for i in range(max_steps):
        ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1 + b1
        logits = torch.tanh(hpreact) @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        dlogits = F.softmax(logits, 1)
        dlogits[range(n), Yb] -= 1
        dlogits /= n
        dW2 = torch.tanh(hpreact).T @ dlogits
        dembcat = (dlogits @ W2.T) @ W1.T
        onehot = F.one_hot(Xb.view(-1), num_classes=vocab_size).float()
        dC = onehot.T @ dembcat.view(-1, n_embd)
        grads = [dC, dW2]
        for p, grad in zip(parameters, grads):
            p.data += -0.1 * grad
        lossi.append(loss.log10().item())
"""


def test_the_lecture_notebook_filled_in_answers_every_gradient_of_exercises_1_to_4(tmp_path: Path):
    # A student's notebook as saved from Colab: data loading, plots, the training loop, the sampling;
    # its exercise 3 cell ends with cmp('hprebn', dhprebn, hprebn), and exercise 3 is not given hprebn.
    folder = submission_from_notebook(FILLED, tmp_path / "student")
    assert folder == tmp_path / "student"
    for config in (NOTEBOOK, OTHER):
        for key in ("ex1", "ex2", "ex3", "ex4"):
            report = grade(folder, key, config)
            assert report.passed, (key, config, verdicts(report))
        assert set(verdicts(grade(folder, "ex1", config)).values()) <= PASSING
        assert list(verdicts(grade(folder, "ex1", config))) == list(GRADED)


def test_answers_written_unlike_the_solutions_pass_at_every_size(tmp_path: Path):
    notebook = write_notebook(
        tmp_path,
        "import torch\nimport torch.nn.functional as F\n%matplotlib inline",
        EX1_VECTORISED,
        ("md", "## Exercise 2"),
        EX2_FROM_PROBS,
        EX3_THROUGH_BNDIFF,
        TRAINING_ONE_HOT,
    )
    folder = submission_from_notebook(notebook, tmp_path / "out")
    for config in (NOTEBOOK, OTHER):
        for key in ("ex1", "ex2", "ex3", "ex4"):
            report = grade(folder, key, config)
            assert report.passed, (key, config, verdicts(report))


def test_exercise_1_split_across_cells_runs_them_in_order_even_a_cell_of_dlogits_alone(tmp_path: Path):
    lines = EX1_VECTORISED.splitlines()
    stages = [lines[:8], lines[8:9], lines[9:]]  # the middle cell assigns dlogits only, from dnorm_logits
    assert stages[1][0].startswith("dlogits =")
    notebook = write_notebook(tmp_path, *("\n".join(stage) for stage in stages), EX2_FROM_PROBS)
    folder = submission_from_notebook(notebook, tmp_path / "out")
    assert set(verdicts(grade(folder, "ex1")).values()) <= PASSING
    assert "dnorm_logits" not in (folder / "ex2_cross_entropy.py").read_text()
    assert grade(folder, "ex2").passed


def test_exercise_4_takes_only_the_statements_of_the_training_loop_that_compute_dC(tmp_path: Path):
    folder = submission_from_notebook(write_notebook(tmp_path, TRAINING_ONE_HOT), tmp_path / "out")
    source = (folder / "ex4_embedding.py").read_text()
    body = source[source.index("def embedding_backward") :]
    assert "onehot = F.one_hot(Xb.view(-1), num_classes=vocab_size).float()  # student.ipynb, cell 1" in body
    assert "dC = onehot.T @ dembcat.view(-1, n_embd)  # student.ipynb, cell 1 (In [1]), line 20" in body
    for elsewhere in ("Xtr", "lossi", "p.data", "dlogits", "n_embd = 10", "range(max_steps)"):
        assert elsewhere not in body
    # The loop index names of the notebook's own scatter-add are the loop's, not the minibatch's `ix`.
    folder = submission_from_notebook(FILLED, tmp_path / "filled")
    body = (folder / "ex4_embedding.py").read_text().split("def embedding_backward")[1]
    assert "ix = Xb[k,j]" in body and "torch.randint" not in body and "Xtr" not in body


def test_a_wrong_dcounts_is_that_gradient_wrong_and_the_steps_after_it_inherited(tmp_path: Path):
    wrong = EX1_VECTORISED.replace(
        "dcounts = dprobs * counts_sum_inv + dcounts_sum.expand_as(counts)", "dcounts = dprobs * counts_sum_inv"
    )
    assert wrong != EX1_VECTORISED
    folder = submission_from_notebook(write_notebook(tmp_path, wrong), tmp_path / "out")
    rows = verdicts(grade(folder, "ex1"))
    assert rows["counts"] == WRONG
    assert rows["norm_logits"] == INHERITED and rows["C"] == INHERITED
    assert {rows[name] for name in ("logprobs", "probs", "counts_sum_inv", "counts_sum")} <= PASSING


def test_half_of_exercise_1_leaves_the_rest_not_started(tmp_path: Path):
    first_five = "\n".join(EX1_VECTORISED.splitlines()[:6])
    checks = "\n".join(f"cmp({name!r}, d{name}, {name})" for name in GRADED)
    folder = submission_from_notebook(write_notebook(tmp_path, f"{first_five}\n\n{checks}\n"), tmp_path / "out")
    rows = verdicts(grade(folder, "ex1"))
    assert {rows[name] for name in GRADED[:5]} <= PASSING
    assert {rows[name] for name in GRADED[5:]} == {NOT_STARTED}
    assert call(folder, "ex1").status == "ok"


def test_a_notebook_with_only_exercise_2_leaves_the_others_not_started(tmp_path: Path):
    folder = submission_from_notebook(write_notebook(tmp_path, EX2_FROM_PROBS), tmp_path / "out")
    assert grade(folder, "ex2").passed
    for key, why in (
        ("ex1", "no cell assigns the gradients of exercise 1"),
        ("ex3", "no cell after exercise 1 assigns dhprebn"),
        ("ex4", "no training loop assigns dC"),
    ):
        outcome = call(folder, key)
        assert outcome.status == "not_started", (key, outcome)
        assert outcome.message.startswith(f"student.ipynb: {why}")
    # Exercises 5 to 7 are not in the notebook: every name the grader asks for is "not started".
    layers = load_module(folder / "ex5_layers.py")
    with pytest.raises(NotImplementedError, match="exercise 5 is not part of the lecture notebook"):
        layers.BatchNorm1d(4)
    assert {p.name for p in folder.iterdir()} == {e.file for e in EXERCISES.values()}


def test_the_notebooks_untouched_placeholders_are_not_started(tmp_path: Path):
    notebook = write_notebook(
        tmp_path,
        "# -----------------\n# YOUR CODE HERE :)\ndlogits = None # TODO. my solution is 3 lines\n# -----------------\n"
        "cmp('logits', dlogits, logits)",
        "dhprebn = None # TODO. my solution is 1 (long) line\ncmp('hprebn', dhprebn, hprebn)",
        "with torch.no_grad():\n  for i in range(max_steps):\n    loss = F.cross_entropy(logits, Yb)\n"
        "    dC, dW1, db1, dW2, db2, dbngain, dbnbias = None, None, None, None, None, None, None\n"
        "    grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n",
    )
    folder = submission_from_notebook(notebook, tmp_path / "out")
    for key, name in (("ex2", "dlogits"), ("ex3", "dhprebn"), ("ex4", "dC")):
        outcome = call(folder, key)
        assert outcome.status == "not_started", (key, outcome)
        assert outcome.message.startswith(f"{name} is None after student.ipynb, cell ")


def test_colab_metadata_magics_and_shell_lines_are_set_aside(tmp_path: Path):
    notebook = write_notebook(
        tmp_path,
        "!pip install -q torch\nimport torch\nimport torch.nn.functional as F\n%matplotlib inline",
        "%%time\n" + EX3_THROUGH_BNDIFF,
        "files = !ls\n%load_ext autoreload\nF.softmax?\n" + EX2_FROM_PROBS + "    %timeit F.softmax(logits, 1)\n"[4:],
        "%%bash\ndlogits = rm -rf /",
        colab={"provenance": [], "collapsed_sections": []},
        accelerator="GPU",
        kernelspec={"display_name": "Python 3", "name": "python3"},
    )
    folder = submission_from_notebook(notebook, tmp_path / "out")
    assert grade(folder, "ex2").passed and grade(folder, "ex3").passed
    source = (folder / "ex2_cross_entropy.py").read_text() + (folder / "ex3_batchnorm.py").read_text()
    for magic in ("!pip", "!ls", "%load_ext", "%%time", "%timeit", "F.softmax?", "rm -rf"):
        assert magic not in source


@pytest.mark.parametrize(
    ("cell", "kept"),
    [
        ("!pip install -q torch\nimport torch", "pass\nimport torch"),
        ("if verbose:\n    %time f()", "if verbose:\n    pass"),
        ("files = !ls\nF.softmax?", "pass\npass"),
        ('!echo "it\'s"\nx = 1\n%ls', "pass\nx = 1\npass"),
        # Python, not IPython: a modulo that continues a bracket or a backslash, and text in a string.
        ("x = (a\n% b)", "x = (a\n% b)"),
        ("x = a \\\n% b", "x = a \\\n% b"),
        ('s = """\n!not a shell line\n"""', 's = """\n!not a shell line\n"""'),
    ],
)
def test_only_lines_where_a_statement_starts_are_taken_for_magics(cell: str, kept: str):
    assert neutralise_magics(cell) == kept


def test_an_exception_in_a_cell_names_the_cell_and_its_line(tmp_path: Path):
    raising = EX2_FROM_PROBS.replace("dlogits = dlogits / n", "dlogits = dlogits / n @ torch.ones(3, 3)")
    notebook = write_notebook(tmp_path, "import torch", ("md", "Exercise 2"), raising)
    outcome = call(submission_from_notebook(notebook, tmp_path / "out"), "ex2")
    assert outcome.status == "error"
    assert outcome.message.startswith("RuntimeError: ")
    assert outcome.message.endswith(
        "dlogits = dlogits / n @ torch.ones(3, 3)  # student.ipynb, cell 3 (In [3]), line 4"
    )


def test_a_cell_that_does_not_parse_fails_its_exercise_at_its_line(tmp_path: Path):
    notebook = write_notebook(tmp_path, "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n)")
    outcome = call(submission_from_notebook(notebook, tmp_path / "out"), "ex2")
    assert outcome.status == "import_error"
    assert outcome.message.startswith("SyntaxError: unmatched ')'")
    assert outcome.message.endswith("dlogits /= n)  # student.ipynb, cell 1 (In [1]), line 3")


def test_imports_functions_and_constants_of_earlier_cells_come_along_when_used(tmp_path: Path):
    notebook = write_notebook(
        tmp_path,
        "import math\nimport matplotlib.pyplot as plt\nEPS = 1e-5\nwords = open('names.txt').read().splitlines()",
        "def softmax(x):\n    e = (x - x.max(1, keepdim=True).values).exp()\n    return e / e.sum(1, keepdim=True)",
        "dlogits = softmax(logits)\ndlogits[range(n), Yb] -= 1\ndlogits /= n",
        "dhprebn = bngain / math.sqrt(1.0) * (bnvar + EPS) ** -0.5 / n * (n * dhpreact - dhpreact.sum(0)"
        " - n / (n - 1) * bnraw * (bnraw * dhpreact).sum(0))",
    )
    folder = submission_from_notebook(notebook, tmp_path / "out")
    assert grade(folder, "ex2").passed and grade(folder, "ex3").passed
    source = (folder / "ex2_cross_entropy.py").read_text() + (folder / "ex3_batchnorm.py").read_text()
    assert "def softmax(x):  # student.ipynb, cell 2 (In [2]), line 1" in source
    assert "import math" in source and "EPS = 1e-5" in source
    assert "matplotlib" not in source and "names.txt" not in source


def test_the_written_functions_take_the_arguments_of_the_solutions(tmp_path: Path):
    folder = submission_from_notebook(FILLED, tmp_path / "out")
    for key in ("ex1", "ex2", "ex3", "ex4"):
        exercise = EXERCISES[key]
        written = getattr(load_module(folder / exercise.file), exercise.function)
        solution = getattr(load_module(SOLUTIONS / exercise.file), exercise.function)
        assert list(inspect.signature(written).parameters) == list(inspect.signature(solution).parameters)


def test_the_written_files_raise_no_integrity_finding_of_their_own(tmp_path: Path):
    folder = submission_from_notebook(FILLED, tmp_path / "out")
    for path in sorted(folder.iterdir()):
        assert scan_source(path.read_text(), path.name).findings == (), path.name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("import torch\nprint('a script')\n", "not a Jupyter notebook: it is not JSON"),
        ("[1, 2, 3]", "JSON, but not a Jupyter notebook (it has no list of cells)"),
        ('{"worksheets": [], "nbformat": 3}', "an nbformat 3 notebook; open it in Jupyter and save it again"),
        (
            json.dumps({"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}}], "nbformat": 4}),
            "no cell assigns the gradients of the exercises",
        ),
        (
            json.dumps({"cells": [{"cell_type": "code", "source": 'dlogits = "\ud800"'}], "nbformat": 4}),
            "cell 1 holds text that is not valid Unicode (surrogates not allowed)",
        ),
    ],
)
def test_a_file_that_is_not_a_filled_in_notebook_gets_a_message_saying_what_to_do(
    tmp_path: Path, content: str, message: str
):
    path = tmp_path / "student.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError) as raised:
        submission_from_notebook(path, tmp_path / "out")
    assert str(raised.value).startswith(message)
    assert "Jupyter" in str(raised.value) or "notebook" in str(raised.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_grade_takes_a_notebook_and_grades_the_selected_exercises(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    results = tmp_path / "results.json"
    code = main(["grade", str(FILLED), "--gradescope", str(results), "--", "-k", "ex2 or ex3"])
    out = capfd.readouterr().out
    assert code == 1  # a selection is not full marks
    assert "exercise 2: cross-entropy backward        8 / 8   2 of 2 tests passed" in out
    assert "exercise 3: batchnorm backward          10 / 10   2 of 2 tests passed" in out
    data = json.loads(results.read_text())
    assert data["score"] == 18 and {t["name"].split(":")[0] for t in data["tests"]} >= {"exercise 2", "exercise 3"}
