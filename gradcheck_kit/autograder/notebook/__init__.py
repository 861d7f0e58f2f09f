"""A filled-in copy of the lecture notebook turned into a submission folder that the grader grades as any other.

:func:`submission_from_notebook` finds the cells of exercises 1-4 by the gradients
they assign (:mod:`.finding`), and writes each exercise's file with the exercise's
function: it binds the notebook's names from the function's arguments
(:mod:`.bindings`), makes ``cmp`` inert, runs the cell's code and returns its
``d``-variables (:mod:`.writing`). The notebook is read as JSON and parsed with
:mod:`ast`; none of its code runs here. The files then run in the sandbox like any
student's.
"""

from __future__ import annotations

from pathlib import Path

from gradcheck_kit.autograder.notebook.bindings import BINDINGS
from gradcheck_kit.autograder.notebook.finding import find_answers
from gradcheck_kit.autograder.notebook.reading import NotebookError, code_cells
from gradcheck_kit.autograder.notebook.writing import exercise_source, not_started_source, safe_name
from gradcheck_kit.course.catalogue import EXERCISES

__all__ = ["NotebookError", "submission_from_notebook"]

#: Why an exercise has no file of its own, when the notebook holds no answer to it.
_NOT_FOUND = {
    "ex1": "no cell assigns the gradients of exercise 1 (dlogprobs, dprobs, ... dC)",
    "ex2": "no cell after exercise 1 assigns dlogits on its own (exercise 2, the cross-entropy backward in one go)",
    "ex3": "no cell after exercise 1 assigns dhprebn from dhpreact (exercise 3, the batchnorm backward in one go)",
    "ex4": "no training loop assigns dC with the rest of its backward pass (exercise 4, putting it all together)",
}


def submission_from_notebook(notebook: Path, dest: Path) -> Path:
    """Write the exercise files answered in ``notebook`` into ``dest``, and return ``dest``.

    Every exercise file of the course is written: those of exercises 1-4 whose cells
    were found run the notebook's code; the others (and exercises 5-7, which are not
    in the lecture notebook) are graded "not started", with the reason.

    Raises:
        NotebookError: when ``notebook`` is not an nbformat 4 notebook, or no cell of it
            answers any exercise; the message says what to do (the caller names the file).
    """
    notebook, dest = Path(notebook), Path(dest)
    name = safe_name(notebook.name)
    cells = code_cells(notebook)
    found = find_answers(cells, BINDINGS["ex4"].given)
    if not found:
        raise NotebookError(
            "no cell assigns the gradients of the exercises (dlogprobs ... dC for exercise 1, "
            "dlogits for 2, dhprebn for 3, dC in the training loop for 4); grade the backprop ninja notebook "
            "with your answers written in it"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for key, exercise in EXERCISES.items():
        pieces = found.get(key)
        if pieces:
            first = min(p.cell.number for p in pieces)
            earlier = [cell for cell in cells if cell.number < first]
            text = exercise_source(key, pieces, earlier, name)
        elif key in _NOT_FOUND:
            text = not_started_source(key, f"{name}: {_NOT_FOUND[key]}", name)
        else:
            why = f"exercise {key[2:]} is not part of the lecture notebook: write {exercise.file} as in exercises/"
            text = not_started_source(key, why, name)
        (dest / exercise.file).write_text(text, encoding="utf-8")
    return dest
