"""The peers: released packages ortmodels is measured against, in their own virtual environment."""
