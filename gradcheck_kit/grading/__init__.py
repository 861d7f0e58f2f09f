"""Grade hand-written gradients: one backward step at a time, with tolerances and named mistakes."""
