"""The autograder: a grading session of pytest, points, Gradescope's results.json and the grade command."""
