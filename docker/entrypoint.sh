#!/bin/sh
# The image's entrypoint. SageMaker starts training containers as `docker run IMAGE train`
# and hosting containers as `docker run IMAGE serve`; processing jobs name their own
# entrypoint (python -m processing.extract, ...). pipelines/local_jobs.py IMAGE_COMMANDS
# mirrors this table for the local runner.
set -e
case "$1" in
  train) shift; exec python -m training.train "$@" ;;
  serve) shift; exec python -m inference.server "$@" ;;
  *) exec "$@" ;;
esac
