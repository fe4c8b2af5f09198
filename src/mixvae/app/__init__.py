"""The application on top of the library: run folders (runs), the command line (cli), pictures
(viz), HTML reports (report), experiment grids (grid) and the 2D benchmark (bench2d).

Nothing in the library's core (distributions, priors, nets, models, objectives, training,
metrics, data) imports this package.
"""
