#!/usr/bin/env bash
# CloudFormation change sets for one environment: every template in infra/, with that
# environment's parameters (infra/parameters/<env>.json), reviewed before they run.
#
#   infra/changeset.sh plan  ENV NAME [TEMPLATE...]   create change set NAME on each
#       stack and print what it would change; a stack it would not change gets none
#   infra/changeset.sh apply ENV NAME [TEMPLATE...]   execute change set NAME on each
#       stack, in order, waiting for each; stops at the first that fails
#
# Stacks are <Prefix>-<env>-<template> (churn-dev-platform). platform comes first (the
# others import its exports; in a new account plan and apply it alone first), then the
# rest in name order, or the file's "Templates" list in its order. A change set is
# immutable: apply runs exactly what plan showed (by the change set's id, as described),
# and CloudFormation refuses it if the stack changed since. A stack plan found no
# changes for keeps its empty (FAILED) change set as the record that it was planned:
# apply notes "no changes" and succeeds. A stack without change set NAME was never
# planned under that name and stops apply (nothing unreviewed runs), unless change set
# NAME already ran there (its id is the execution's request token: a rerun of apply).
# Each template gets the parameters it declares from the
# environment's file, overridden by CHANGESET_PARAMETERS: a JSON object of values
# known only at run time (approval-deploy's FunctionCodeKey, the key of the archive
# CD has just uploaded); a parameter left out of both takes the template's default,
# and one without a default stops the plan. Needs the aws CLI, jq and credentials for
# the environment's account. CHANGESET_SUMMARY, when set, is a file the changes are
# appended to as Markdown (the job summary); CHANGESET_DESCRIPTION describes the
# change sets.
set -euo pipefail
cd "$(dirname "$0")"

if (($# < 3)) || [[ $1 != plan && $1 != apply ]]; then
  echo "usage: $0 plan|apply ENV CHANGE_SET_NAME [TEMPLATE...]" >&2
  exit 2
fi
action=$1 env=$2 name=$3
shift 3
parameters="parameters/${env}.json"
if [[ ! -f $parameters ]]; then
  echo "no $parameters: the environments are $(cd parameters && ls -- *.json)" >&2
  exit 2
fi
prefix=$(jq -r '.Parameters.Prefix // "churn"' "$parameters")
run_time=${CHANGESET_PARAMETERS:-'{}'}
if ! jq -e 'type == "object"' <<< "$run_time" > /dev/null 2>&1; then
  echo 'CHANGESET_PARAMETERS is not a JSON object ({"Name": "value", ...})' >&2
  exit 2
fi
summary=${CHANGESET_SUMMARY:-/dev/null}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

templates() {
  if (($#)); then
    printf '%s\n' "$@"
    return
  fi
  # the environment's own list (a template deployed in some environments only), else
  # every template
  if jq -e '.Templates' "$parameters" > /dev/null; then
    jq -r '.Templates[]' "$parameters"
    return
  fi
  echo platform
  for file in *.yaml; do
    [[ $file == platform.yaml ]] || echo "${file%.yaml}"
  done
}

stack_status() {
  aws cloudformation describe-stacks --stack-name "$1" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null || echo NONE
}

change_set() {  # stack, then describe-change-set options
  local stack=$1
  shift
  aws cloudformation describe-change-set --stack-name "$stack" --change-set-name "$name" "$@"
}

no_changes() {  # a change set's StatusReason
  [[ $1 == *"didn't contain changes"* || $1 == *"No updates"* ]]
}

plan() {
  local template=$1 stack=$2 type declared missing reason
  case $(stack_status "$stack") in
    NONE | REVIEW_IN_PROGRESS) type=CREATE ;;
    ROLLBACK_COMPLETE)
      echo "$stack: its creation failed and rolled back; delete the stack, then plan again" >&2
      return 1 ;;
    *_IN_PROGRESS)
      echo "$stack: an operation is in progress; plan again when it ends" >&2
      return 1 ;;
    *) type=UPDATE ;;
  esac
  declared=$(aws cloudformation validate-template --template-body "file://${template}.yaml" \
    --query 'Parameters' --output json)
  # the file's values, then the run's, for the parameters this template declares
  jq --argjson declared "${declared:-null}" --argjson run_time "$run_time" '
      (.Parameters + $run_time) as $values
      | [($declared // [])[] | select(.ParameterKey | in($values))
         | {ParameterKey, ParameterValue: ($values[.ParameterKey] | tostring)}]' \
    "$parameters" > "$work/parameters.json"
  missing=$(jq -r --argjson declared "${declared:-null}" '
      [($declared // [])[] | select(has("DefaultValue") | not) | .ParameterKey]
      - [.[].ParameterKey] | join(", ")' "$work/parameters.json")
  if [[ -n $missing ]]; then
    echo "$stack: infra/${template}.yaml needs $missing: put it in $parameters," \
      "or CHANGESET_PARAMETERS when only the run knows it" >&2
    return 1
  fi
  jq '[.Tags // {} | to_entries[] | {Key: .key, Value: .value}]' "$parameters" \
    > "$work/tags.json"
  if [[ $type == UPDATE || $(stack_status "$stack") == REVIEW_IN_PROGRESS ]]; then
    aws cloudformation delete-change-set --stack-name "$stack" \
      --change-set-name "$name" 2>/dev/null || true
  fi
  aws cloudformation create-change-set --stack-name "$stack" --change-set-name "$name" \
    --change-set-type "$type" --template-body "file://${template}.yaml" \
    --parameters "file://$work/parameters.json" --tags "file://$work/tags.json" \
    --capabilities CAPABILITY_NAMED_IAM \
    --description "${CHANGESET_DESCRIPTION:-infra/${template}.yaml for ${env}}" > /dev/null
  if ! aws cloudformation wait change-set-create-complete --stack-name "$stack" \
    --change-set-name "$name" 2>/dev/null; then
    reason=$(change_set "$stack" --query StatusReason --output text)
    if no_changes "$reason"; then
      # kept: apply reads it as "planned, nothing to do" (and deletes it)
      echo "$stack: no changes"
      printf '| %s | no changes | | |\n' "$stack" >> "$summary"
      return 0
    fi
    echo "$stack: the change set failed: $reason" >&2
    return 1
  fi
  echo "$stack: change set $name ($type)"
  change_set "$stack" --output table \
    --query 'Changes[].ResourceChange.{Action: Action, Resource: LogicalResourceId, Type: ResourceType, Replacement: Replacement}'
  change_set "$stack" --output text \
    --query 'Changes[].ResourceChange.[Action, LogicalResourceId, ResourceType, Replacement]' \
    | while IFS=$'\t' read -r act resource kind replacement; do
        printf '| %s | %s | %s %s | %s |\n' "$stack" "$act" "$resource" "$kind" "$replacement"
      done >> "$summary"
}

# The stack's events of this change set's execution (execute-change-set passes NAME as
# its request token), as text: the query's result.
execution_events() {
  aws cloudformation describe-stack-events --stack-name "$1" --output text \
    --query "StackEvents[?ClientRequestToken=='${name}'] | $2"
}

apply() {
  local stack=$2 found id status execution reason kind=update
  if ! found=$(change_set "$stack" --output json \
    --query '[ChangeSetId, Status, ExecutionStatus, StatusReason]' 2>/dev/null); then
    if [[ $(stack_status "$stack") != NONE && $(execution_events "$stack" 'length(@)') != 0 ]]; then
      status=$(stack_status "$stack")
      if [[ $status == CREATE_COMPLETE || $status == UPDATE_COMPLETE ]]; then
        echo "$stack: change set $name was executed already: $status"
        return 0
      fi
      echo "$stack: change set $name was executed and the stack is $status: plan again" >&2
      return 1
    fi
    echo "$stack: no change set $name, so nothing reviewed to execute: run" \
      "infra/changeset.sh plan $env $name, review its changes, then apply" >&2
    return 1
  fi
  { read -r id; read -r status; read -r execution; read -r reason; } \
    < <(jq -r '.[] | . // "" | gsub("\n"; " ")' <<< "$found")
  case $status/$execution in
    CREATE_COMPLETE/AVAILABLE) ;;
    FAILED/*)
      if no_changes "$reason"; then
        echo "$stack: no changes (change set $name has none): nothing to execute"
        aws cloudformation delete-change-set --change-set-name "$id"
        return 0
      fi
      echo "$stack: change set $name failed when plan created it: $reason" >&2
      return 1 ;;
    *)
      echo "$stack: change set $name is $status/$execution, not executable: plan again" >&2
      return 1 ;;
  esac
  [[ $(stack_status "$stack") == REVIEW_IN_PROGRESS ]] && kind=create
  # by its id: exactly the change set just described, which plan created and printed
  aws cloudformation execute-change-set --change-set-name "$id" \
    --client-request-token "$name"
  if ! aws cloudformation wait "stack-${kind}-complete" --stack-name "$stack" 2>/dev/null; then
    # the first resource that failed says why (events come newest first)
    reason=$(execution_events "$stack" \
      "[?ends_with(ResourceStatus, '_FAILED')] | [-1].[LogicalResourceId, ResourceStatusReason]")
    echo "$stack: executing change set $name failed, the stack is $(stack_status "$stack"):" \
      "${reason//$'\t'/: }" >&2
    return 1
  fi
  echo "$stack: change set $name executed: $(stack_status "$stack")"
}

if [[ $action == plan ]]; then
  printf '\n### Change sets %s for %s\n\n| stack | action | resource | replacement |\n|---|---|---|---|\n' \
    "$name" "$env" >> "$summary"
fi
mapfile -t names < <(templates "$@")
for template in "${names[@]}"; do
  [[ -f ${template}.yaml ]] || { echo "no infra/${template}.yaml" >&2; exit 2; }
  "$action" "$template" "${prefix}-${env}-${template}"
done
