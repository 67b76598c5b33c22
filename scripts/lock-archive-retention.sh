#!/bin/sh
# azd postprovision hook (azure.yaml), also runnable by hand: lock the archive container's
# time-based retention (WORM) policy when this environment requires it (issue 22).
#
# ARM creates retention policies unlocked, and an unlocked policy gives no delete protection: whoever
# holds .../immutabilityPolicies/delete (Owner, Storage Blob Data Owner, Storage Account Contributor…)
# can remove it and then delete the books. Locking is an action (POST .../immutabilityPolicies/
# default/lock, `az storage container immutability-policy lock`), not a template property, hence
# this step. It is IRREVERSIBLE: once locked, the policy can only be extended, and neither the
# container nor the account can be deleted while a blob is under retention.
#
# Inputs (outputs of infra/main.bicep, exported by azd to hooks):
#   ARCHIVE_RETENTION_LOCK_REQUIRED  true → lock (default true when environmentType is prod)
#   AZURE_RESOURCE_GROUP, STORAGE_ACCOUNT_NAME, ARCHIVE_CONTAINER
# Afterwards it sets ARCHIVE_RETENTION_LOCKED=true in the azd environment, so that later provisions
# stop declaring the (now read-only) policy. Needs: `az login` as a principal holding
# Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies/lock/action on the
# account (Owner, Contributor or Storage Account Contributor), and `azd` on PATH.
set -eu

fail() {
    echo "lock-archive-retention: $*" >&2
    exit 1
}

if [ "${ARCHIVE_RETENTION_LOCK_REQUIRED:-false}" != "true" ]; then
    echo "lock-archive-retention: not required in this environment (ENVIRONMENT_TYPE=${ENVIRONMENT_TYPE:-?}); the archive retention policy stays unlocked (no delete protection)."
    exit 0
fi

rg="${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set: run azd provision first}"
account="${STORAGE_ACCOUNT_NAME:?STORAGE_ACCOUNT_NAME is not set: run azd provision first}"
container="${ARCHIVE_CONTAINER:?ARCHIVE_CONTAINER is not set: run azd provision first}"

state=$(az storage container immutability-policy show --resource-group "$rg" --account-name "$account" \
    --container-name "$container" --query state -o tsv) || fail "cannot read the retention policy of $account/$container"

case "$state" in
    Locked)
        echo "lock-archive-retention: $account/$container retention policy is already locked."
        ;;
    Unlocked)
        etag=$(az storage container immutability-policy show --resource-group "$rg" --account-name "$account" \
            --container-name "$container" --query etag -o tsv) || fail "cannot read the policy etag"
        az storage container immutability-policy lock --resource-group "$rg" --account-name "$account" \
            --container-name "$container" --if-match "$etag" -o none || fail "locking the retention policy was refused"
        echo "lock-archive-retention: locked the retention policy of $account/$container."
        ;;
    *)
        fail "unexpected retention policy state '$state' on $account/$container (is the policy deployed?)"
        ;;
esac

if command -v azd >/dev/null 2>&1; then
    azd env set ARCHIVE_RETENTION_LOCKED true
else
    echo "lock-archive-retention: azd not found; set ARCHIVE_RETENTION_LOCKED=true in the azd environment before the next provision." >&2
fi
