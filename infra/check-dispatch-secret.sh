#!/usr/bin/env bash
# The approval-events function (infra/approval-deploy.yaml) reads its GitHub token or
# Harness webhook URL from a Secrets Manager secret no template creates: whoever holds
# the token creates it. Deploying the function without it would only fail at the
# first approval (the event in the dead-letter queue), so CD checks it before it
# plans:
#
#   infra/check-dispatch-secret.sh ENV   exit 0 when the secret DispatchSecretName of
#       infra/parameters/<ENV>.json exists in this account and region and has a
#       value; else exit 1 naming it, with the command that creates it
#
# Needs the aws CLI, jq and secretsmanager:DescribeSecret on the secret.
set -euo pipefail
cd "$(dirname "$0")"

if (($# != 1)); then
  echo "usage: $0 ENV" >&2
  exit 2
fi
parameters="parameters/$1.json"
if [[ ! -f $parameters ]]; then
  echo "no $parameters" >&2
  exit 2
fi
name=$(jq -r '.Parameters.DispatchSecretName // empty' "$parameters")
if [[ -z $name ]]; then
  echo "$parameters names no DispatchSecretName: $1 deploys no approval-events function"
  exit 0
fi
create="aws secretsmanager create-secret --name $name --secret-string \"\$TOKEN\""
if ! described=$(aws secretsmanager describe-secret --secret-id "$name" --output json); then
  echo "the secret $name does not exist here (or this role may not describe it):" \
    "whoever holds the GitHub token (or the Harness webhook URL) creates it once with:" \
    "$create" >&2
  exit 1
fi
if ! jq -e '[.VersionIdsToStages // {} | .[][]] | index("AWSCURRENT")' \
  <<< "$described" > /dev/null; then
  echo "the secret $name has no value: put it with" \
    "aws secretsmanager put-secret-value --secret-id $name --secret-string \"\$TOKEN\"" >&2
  exit 1
fi
echo "the secret $name exists and has a value"
