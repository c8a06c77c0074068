"""Load tests: the locust user (locustfile.py), the bench profiles, the matrix runner's inputs."""
