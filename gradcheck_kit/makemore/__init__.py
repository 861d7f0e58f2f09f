"""The makemore models of the lectures: the MLP, its layers, the names dataset, training and its health."""
