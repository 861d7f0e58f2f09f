"""The grading scheme: points per exercise and test, visibility, and each exercise's time limit."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

# Loaded before pytester's in-process run, whose module snapshot must not unload torch.
import torch  # noqa: F401

from gradcheck_kit.autograder.points import CollectedTest, Plan, Scheme, SchemeError, SchemeWarning
from gradcheck_kit.verdicts import TEST_PROPERTY

EXERCISES = Path(__file__).resolve().parent.parent / "exercises"
GRADIENTS = ("logprobs", "probs", "counts", "h")
EX1 = {"exercise": "ex1"}
TITLES = {"ex1": "exercise 1: chunked backward", "ex2": "exercise 2: cross-entropy backward"}


def gradient_tests(devices=("cpu", "cuda"), cuda_runs=False) -> list[CollectedTest]:
    """Exercise 1 as the exercises collect it: one test per gradient and device, then other shapes."""
    tests = [
        CollectedTest(
            f"test_ex1.py::test_gradient[{device}-{name}]",
            "test_gradient",
            {"name": name},
            device,
            module_marks=(EX1,),
            runs=device == "cpu" or cuda_runs,
        )
        for device in devices
        for name in GRADIENTS
    ]
    tests += [
        CollectedTest(
            f"test_ex1.py::test_other_shapes[{device}]",
            "test_other_shapes",
            {},
            device,
            module_marks=(EX1,),
            test_marks=({"visibility": "after_due_date"},),
            runs=device == "cpu" or cuda_runs,
        )
        for device in devices
    ]
    return tests


def fused(exercise: str, *functions: str, module_mark: dict | None = None) -> list[CollectedTest]:
    mark = {"exercise": exercise, **(module_mark or {})}
    return [CollectedTest(f"test_{exercise}.py::{f}[cpu]", f, {}, "cpu", module_marks=(mark,)) for f in functions]


SCHEME = Scheme.from_dict({"ex1": {"points": 10, "tests": {"test_gradient": 8}}})


def test_each_gradient_of_exercise_one_gets_an_equal_share():
    plan = SCHEME.plan(gradient_tests(), TITLES)
    gradients = [s.max_score for s in plan.shares.values() if "test_gradient" in s.nodeid]
    assert gradients == [2.0, 2.0, 2.0, 2.0]
    assert plan.shares["test_ex1.py::test_other_shapes[cpu]"].max_score == 2.0
    assert plan.total == 10


def test_the_total_is_the_same_with_or_without_a_gpu():
    without = SCHEME.plan(gradient_tests(cuda_runs=False), TITLES)
    with_gpu = SCHEME.plan(gradient_tests(cuda_runs=True), TITLES)
    assert without.total == with_gpu.total == 10
    assert "test_ex1.py::test_gradient[cuda-h]" not in without.shares
    assert with_gpu.shares["test_ex1.py::test_gradient[cuda-h]"].max_score == 1.0
    assert with_gpu.shares["test_ex1.py::test_gradient[cpu-h]"].max_score == 1.0


def test_exercises_given_no_points_share_a_total_of_100():
    tests = [*gradient_tests(), *fused("ex2", "test_notebook_shapes", "test_other_shapes")]
    plan = Scheme().plan(tests, TITLES)
    assert plan.total == 100
    assert plan.exercises == {"ex1": 50.0, "ex2": 50.0}
    assert plan.shares["test_ex2.py::test_notebook_shapes[cpu]"].max_score == 25.0


def test_exercises_given_no_points_share_what_the_others_leave():
    tests = [*gradient_tests(), *fused("ex2", "test_notebook_shapes")]
    plan = SCHEME.plan(tests, TITLES)
    assert plan.exercises == {"ex1": 10.0, "ex2": 90.0}


def test_markers_set_points_and_the_points_file_overrides_them():
    tests = fused("ex2", "test_notebook_shapes", "test_other_shapes", module_mark={"points": 6})
    assert Scheme().plan(tests).exercises == {"ex2": 6.0}
    overridden = Scheme.from_dict({"ex2": {"points": 12, "tests": {"test_other_shapes": 3}}}).plan(tests)
    assert overridden.shares["test_ex2.py::test_notebook_shapes[cpu]"].max_score == 9.0
    assert overridden.shares["test_ex2.py::test_other_shapes[cpu]"].max_score == 3.0


def test_visibility_comes_from_the_closest_setting():
    plan = Scheme.from_dict({"ex1": {"visibility": "hidden"}}).plan(gradient_tests())
    assert plan.shares["test_ex1.py::test_gradient[cpu-h]"].visibility == "hidden"
    assert plan.shares["test_ex1.py::test_other_shapes[cpu]"].visibility == "after_due_date"
    scheme = Scheme.from_dict({"ex1": {"tests": {"test_other_shapes": {"visibility": "visible"}}}})
    assert scheme.plan(gradient_tests()).shares["test_ex1.py::test_other_shapes[cpu]"].visibility == "visible"
    assert Scheme().plan(gradient_tests()).shares["test_ex1.py::test_gradient[cpu-h]"].visibility == "visible"


def test_deselected_tests_take_their_points_out_of_the_total_without_inflating_the_rest():
    plan = SCHEME.plan(gradient_tests(), TITLES)
    selected = plan.restricted(["test_ex1.py::test_gradient[cpu-h]", "test_ex1.py::test_gradient[cpu-probs]"])
    assert selected.total == 4.0
    assert [s.max_score for s in selected.shares.values()] == [2.0, 2.0]
    assert selected.selection and not plan.selection
    assert (selected.course_total, selected.left_out) == (10.0, {"ex1": 3})


def test_an_exercise_whose_file_was_not_collected_keeps_its_points_in_the_full_runs_total():
    scheme = Scheme.from_dict({"total": 100, "ex1": {"points": 10}, "ex2": {"points": 8}, "ex3": {}})
    plan = scheme.plan(gradient_tests(), TITLES)
    assert plan.total == 10.0 and plan.selection
    assert plan.course == {"ex1": 10.0, "ex2": 8.0, "ex3": 82.0}
    assert plan.uncollected == ("ex2", "ex3")
    # Travelling on the reports, as it does to the pytest-xdist controller.
    assert Plan.from_summary(plan.summary()) == Plan({}, plan.exercises, {"ex1": TITLES["ex1"]}, **_rest(plan))


def _rest(plan: Plan) -> dict:
    return {"course": plan.course, "left_out": plan.left_out, "uncollected": plan.uncollected}


def test_names_and_numbers_are_the_same_for_every_submission():
    tests = [*gradient_tests(), *fused("ex2", "test_notebook_shapes", "test_other_shapes")]
    shares = list(SCHEME.plan(tests, TITLES).shares.values())
    assert [(s.number, s.name) for s in shares] == [
        ("1.1", "exercise 1: chunked backward [cpu]: dlogprobs"),
        ("1.2", "exercise 1: chunked backward [cpu]: dprobs"),
        ("1.3", "exercise 1: chunked backward [cpu]: dcounts"),
        ("1.4", "exercise 1: chunked backward [cpu]: dh"),
        ("1.5", "exercise 1: chunked backward [cpu]: other shapes"),
        ("2.1", "exercise 2: cross-entropy backward [cpu]: notebook shapes"),
        ("2.2", "exercise 2: cross-entropy backward [cpu]: other shapes"),
    ]


def test_tests_without_an_exercise_are_not_graded():
    plain = CollectedTest("test_x.py::test_helper", "test_helper")
    assert Scheme().plan([plain, *fused("ex2", "test_notebook_shapes")]).shares.keys() == {
        "test_ex2.py::test_notebook_shapes[cpu]"
    }


def test_giving_out_more_points_than_the_total_is_an_error():
    scheme = Scheme.from_dict({"total": 10, "ex1": {"points": 12}})
    with pytest.raises(SchemeError, match="add up to 12, more than the total 10, and nothing is left for ex2"):
        scheme.plan([*gradient_tests(), *fused("ex2", "test_notebook_shapes")])


def test_an_exercise_whose_listed_tests_leave_points_unshared_is_an_error():
    scheme = Scheme.from_dict({"ex1": {"points": 10, "tests": {"test_gradient": 4, "test_other_shapes": 4}}})
    with pytest.raises(SchemeError, match="given 8 of its 10 points and no other test shares the rest"):
        scheme.plan(gradient_tests())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ex1": {"point": 3}}, r"\[ex1\]: unknown key 'point'"),
        ({"ex1": {"points": -1}}, r"\[ex1\]: points must be a number of at least 0, got -1"),
        ({"ex1": {"points": "ten"}}, r"points must be a number of at least 0, got 'ten'"),
        ({"ex1": {"visibility": "students"}}, r"visibility must be one of hidden, after_due_date"),
        ({"ex1": {"timeout": 0}}, r"timeout must be a number of seconds above 0"),
        ({"ex1": {"tests": {"test_gradient": {"visible": True}}}}, r"\[ex1.tests\] test_gradient: unknown key"),
        ({"totl": 100}, r"unknown key 'totl'"),
    ],
)
def test_a_mistake_in_the_points_file_is_an_error_naming_where(data, message):
    with pytest.raises(SchemeError, match=message):
        Scheme.from_dict(data)


def test_a_marker_with_an_unknown_argument_is_an_error():
    test = CollectedTest("t.py::test_a", "test_a", module_marks=({"exercise": "ex1", "weight": 3},))
    with pytest.raises(SchemeError, match="gradcheck marker of t.py::test_a: unknown argument 'weight'"):
        Scheme().plan([test])


def test_time_limits_come_from_the_exercise_then_the_file_then_the_fallback():
    scheme = Scheme.from_dict({"timeout": 20, "ex1": {"timeout": 30}})
    assert scheme.timeout_for("ex1", 60) == 30
    assert scheme.timeout_for("ex2", 60) == 20
    assert Scheme().timeout_for("ex2", 60) == 60
    assert scheme.time_limits(60) == (20, {"ex1": 30})
    assert Scheme().time_limits(60) == (60, {})


def test_the_shipped_points_give_100_points_and_2_to_each_gradient_of_exercise_one(pytester: pytest.Pytester):
    files = sorted(str(path) for path in EXERCISES.glob("test_ex*.py"))
    calls = pytester.inline_run("--collect-only", "-p", "no:cacheprovider", *files).getcalls("pytest_collection_finish")
    shares = [v for item in calls[0].session.items for k, v in item.user_properties if k == TEST_PROPERTY]
    assert sum(s["max_score"] for s in shares) == 100
    gradients = [s for s in shares if "::test_gradient[cpu-" in s["nodeid"]]
    assert len(gradients) == 26 and {s["max_score"] for s in gradients} == {2.0}
    hidden = [s for s in shares if s["visibility"] != "visible"]
    assert {s["name"].rsplit(": ", 1)[1] for s in hidden} == {"other shapes"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[ex1]\npoints = 10\nvisibility = "hidden"\n', "[ex1]"),
        ('[ex1]\nvisibility = "hidden"\n', "[ex1]"),
        ('[ex1.tests]\ntest_gradient = { points = 4, visibility = "hidden" }\n', "[ex1.tests] test_gradient"),
    ],
)
def test_a_hidden_test_worth_points_warns_that_students_see_no_total(tmp_path: Path, text: str, where: str):
    path = tmp_path / "points.toml"
    path.write_text(text)
    with pytest.warns(SchemeWarning, match=rf"{re.escape(str(path))} {re.escape(where)}: visibility = \"hidden\""):
        Scheme.load(path)


@pytest.mark.parametrize(
    "text",
    [
        '[ex7]\npoints = 0\nvisibility = "hidden"\n',
        '[ex1.tests]\ntest_gradient = { points = 0, visibility = "hidden" }\n',
        '[ex1]\nvisibility = "after_due_date"\n',
    ],
)
def test_hidden_tests_worth_nothing_and_later_visibilities_load_without_a_warning(tmp_path: Path, text: str):
    path = tmp_path / "points.toml"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scheme.load(path)


def test_the_shipped_points_file_loads_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scheme.load(EXERCISES / "points.toml")


def test_the_leaderboard_table_names_a_column_for_each_figure_the_run_measured():
    scheme = Scheme.from_dict({"leaderboard": {"speedup": "fused speed-up"}, "ex1": {"points": 10}})
    assert scheme.exercises.keys() == {"ex1"}
    assert scheme.leaderboard_entries({"speedup": 6.23456}) == [
        {"name": "fused speed-up", "value": 6.235, "order": "desc"}
    ]
    assert scheme.leaderboard_entries({}) == []  # not timed (a pass failed, or the timing was too noisy)
    assert Scheme().leaderboard_entries({"speedup": 6.2}) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"leaderboard": {"accuracy": "acc"}}, r"\[leaderboard\]: unknown key 'accuracy'; expected one of speedup"),
        ({"leaderboard": {"speedup": ""}}, r"\[leaderboard\] speedup: the value is the leaderboard column's name"),
    ],
)
def test_a_mistake_in_the_leaderboard_table_is_an_error_naming_it(data, message):
    with pytest.raises(SchemeError, match=message):
        Scheme.from_dict(data)
