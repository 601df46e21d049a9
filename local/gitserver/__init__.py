"""A git server over the smart HTTP protocol: `git http-backend` behind a small HTTP server.

Jobs reach it by URL exactly as they would reach CodeCommit or GitHub (clone, fetch, push of
branches and tags), so nothing in them knows it is local. A tiny admin API creates bare
repositories, the way a hosted git service's "create repository" call does.
"""

from local.gitserver.server import GitHTTPServer, serve, valid_repo_name

__all__ = ["GitHTTPServer", "serve", "valid_repo_name"]
