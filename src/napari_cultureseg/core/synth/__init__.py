"""Data the project makes: seeded synthetic images with exact masks, and co-cultures.

- :mod:`.phase`: phase-contrast cultures (the tests' and the sample's image).
- :mod:`.culture`: Rahkonen et al.'s six overlapping classes on vascular structures.
- :mod:`.spheroid`: bright-field spheroid wells (Sadanandan et al. 2017).
- :mod:`.coculture`: co-cultures pasted from real mono-cultures (Khalid et al. 2022).
- :mod:`.data`: synthetic training sets named by seed, for recipes.

Only :func:`phase_culture` is imported here (numpy only); the others on use.
"""

from .phase import phase_culture

__all__ = ["phase_culture"]
