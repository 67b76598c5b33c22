#!/bin/sh
# azd postdeploy hook (azure.yaml): create or update the Event Grid subscription that delivers
# BlobCreated events of the inbox container to the `upload_document` blob trigger.
#
# Why after deploy and not in infra/main.bicep: the webhook URL must carry the Functions host's
# `blobs_extension` system key, which the host creates only once code with an Event Grid blob
# trigger is deployed and running, and Event Grid validates the endpoint (a handshake only the
# running blob extension answers) when the subscription is created.
#
# The subscription itself is Bicep (infra/eventgrid-subscription.bicep, inbox filter included);
# ARM reads the key there with listKeys, so this script never sees, prints or passes the key.
#
# Inputs: the azd environment (outputs of infra/main.bicep), exported by azd to hooks.
# Needs: the Azure CLI signed in (a valid, unexpired `az login`) as a principal holding, on the
# resource group, either Contributor, or Website Contributor (host keys: Microsoft.Web/sites/*)
# plus EventGrid Contributor (Microsoft.EventGrid/* — it covers systemTopics/eventSubscriptions/write,
# which EventGrid EventSubscription Contributor does not). Website Contributor alone holds no
# Microsoft.EventGrid action: the subscription is then refused with AuthorizationFailed.
# Every refusal stops the hook at once with Azure's own message.
set -eu

ROLES_NEEDED="Contributor on resource group '${AZURE_RESOURCE_GROUP:-?}', or Website Contributor plus EventGrid Contributor on it"

fail() {
    echo "azd-postdeploy: $*" >&2
    exit 1
}

# First lines of an Azure CLI error (its own words), on one line.
first_lines() {
    printf '%s\n' "$1" | sed -e '/^[[:space:]]*$/d' | head -n 4 | tr '\n' ' ' | sed -e 's/[[:space:]]*$//'
}

is_login_problem() {
    printf '%s' "$1" | grep -Eqi "az login|AADSTS|refresh token|token.*expired|expired.*token|Please run 'az login'|interaction_required|No subscription found"
}

is_authorization_problem() {
    printf '%s' "$1" | grep -Eqi "AuthorizationFailed|does not have authorization|LinkedAuthorizationFailed|Forbidden"
}

for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME EVENTGRID_SYSTEM_TOPIC_NAME \
    STORAGE_ACCOUNT_NAME INBOX_CONTAINER DEAD_LETTER_CONTAINER BLOB_TRIGGER_FUNCTION_NAME; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail "$name is not set: run 'azd provision' first (it is an output of infra/main.bicep)"
done
command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is required"

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
template="$script_dir/../infra/eventgrid-subscription.bicep"
[ -f "$template" ] || template="$PWD/infra/eventgrid-subscription.bicep"
[ -f "$template" ] || fail "infra/eventgrid-subscription.bicep not found"

attempts=${EVENTGRID_KEY_WAIT_ATTEMPTS:-30}
delay=${EVENTGRID_KEY_WAIT_SECONDS:-10}

# 0. The CLI session: `az account show` reads a local cache and succeeds on an expired login, so
#    ask Entra for a token (only its expiry is printed, never the token).
if ! login_error=$(az account get-access-token --query expiresOn --output tsv 2>&1 >/dev/null); then
    fail "the Azure CLI cannot get a token (login missing or expired): $(first_lines "$login_error") — run 'az login' (and 'azd auth login'), then 'azd hooks run postdeploy'"
fi

# 1. Wait until the host has created the blobs_extension key. Only a true/false leaves Azure:
#    the JMESPath query compares the key with null instead of returning it. A refusal (rights,
#    login, missing app) is final and reported at once; anything else is waited out.
echo "azd-postdeploy: waiting for the blobs_extension system key of $AZURE_FUNCTION_APP_NAME"
attempt=1
last_error=""
while :; do
    errors_file=$(mktemp)
    present=$(az functionapp keys list \
        --resource-group "$AZURE_RESOURCE_GROUP" \
        --name "$AZURE_FUNCTION_APP_NAME" \
        --query 'systemKeys.blobs_extension != `null`' \
        --output tsv 2>"$errors_file") || present=""
    errors=$(cat "$errors_file")
    rm -f "$errors_file"
    [ "$present" = "true" ] && break
    if [ -n "$errors" ]; then
        if is_authorization_problem "$errors"; then
            fail "reading the host keys of $AZURE_FUNCTION_APP_NAME was refused: $(first_lines "$errors") — this hook needs $ROLES_NEEDED"
        fi
        if is_login_problem "$errors"; then
            fail "the Azure CLI session is not usable: $(first_lines "$errors") — run 'az login', then 'azd hooks run postdeploy'"
        fi
        if printf '%s' "$errors" | grep -Eqi "ResourceNotFound|ResourceGroupNotFound|could not be found"; then
            fail "$(first_lines "$errors") — was 'azd provision' run for this environment?"
        fi
        last_error=$(first_lines "$errors")
    fi
    if [ "$attempt" -ge "$attempts" ]; then
        if [ -n "$last_error" ]; then
            fail "no blobs_extension key after $attempts attempts; last error: $last_error"
        fi
        fail "no blobs_extension key after $attempts attempts: is the Event Grid blob trigger '$BLOB_TRIGGER_FUNCTION_NAME' deployed and the host healthy?"
    fi
    attempt=$((attempt + 1))
    # Any request starts a scaled-to-zero Flex host; the blob extension creates its key at start-up.
    if command -v curl >/dev/null 2>&1; then
        curl --silent --output /dev/null --max-time 30 "https://$AZURE_FUNCTION_APP_NAME.azurewebsites.net/" || true
    fi
    sleep "$delay"
done

# 2. Deploy the subscription stage (idempotent: re-running updates it in place).
echo "azd-postdeploy: deploying the Event Grid subscription (BlobCreated in '$INBOX_CONTAINER' -> $BLOB_TRIGGER_FUNCTION_NAME)"
errors_file=$(mktemp)
if ! az deployment group create \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name inqom-bridge-eventgrid-subscription \
    --template-file "$template" \
    --parameters \
        systemTopicName="$EVENTGRID_SYSTEM_TOPIC_NAME" \
        functionAppName="$AZURE_FUNCTION_APP_NAME" \
        blobTriggerFunctionName="$BLOB_TRIGGER_FUNCTION_NAME" \
        inboxContainerName="$INBOX_CONTAINER" \
        storageAccountName="$STORAGE_ACCOUNT_NAME" \
        deadLetterContainerName="$DEAD_LETTER_CONTAINER" \
    --only-show-errors \
    --output none 2>"$errors_file"; then
    errors=$(cat "$errors_file")
    rm -f "$errors_file"
    if is_authorization_problem "$errors"; then
        fail "deploying the Event Grid subscription was refused: $(first_lines "$errors") — this hook needs $ROLES_NEEDED (Website Contributor alone has no Microsoft.EventGrid action)"
    fi
    if is_login_problem "$errors"; then
        fail "the Azure CLI session is not usable: $(first_lines "$errors") — run 'az login', then 'azd hooks run postdeploy'"
    fi
    fail "deploying infra/eventgrid-subscription.bicep failed: $(first_lines "$errors")"
fi
rm -f "$errors_file"

# 3. Remind the operator of what Bicep deliberately leaves to them (best effort, names only).
if [ -n "${KEY_VAULT_NAME:-}" ]; then
    existing=$(az keyvault secret list --vault-name "$KEY_VAULT_NAME" --query '[].name' --output tsv 2>/dev/null) || existing="?"
    missing=""
    for secret in inqom-username inqom-password inqom-client-id inqom-client-secret \
        enfact-session-key enfact-webhook-secret; do
        if [ "$existing" = "?" ] || ! printf '%s\n' "$existing" | grep -qx "$secret"; then
            missing="$missing $secret"
        fi
    done
    if [ "$existing" = "?" ]; then
        if [ "${NETWORK_ISOLATION:-false}" = "true" ]; then
            echo "azd-postdeploy: could not list secrets in $KEY_VAULT_NAME: with NETWORK_ISOLATION=true its public access is disabled, so run this from inside the virtual network (or with Key Vault Reader or Secrets Officer there); make sure these exist:$missing"
        else
            echo "azd-postdeploy: could not list secrets in $KEY_VAULT_NAME (needs Key Vault Reader or Secrets Officer); make sure these exist:$missing"
        fi
    elif [ -n "$missing" ]; then
        echo "azd-postdeploy: secrets still to set in $KEY_VAULT_NAME:$missing"
        echo "  az keyvault secret set --vault-name $KEY_VAULT_NAME --name <name> --file <file-with-value> --encoding utf-8"
    fi
fi
if [ -n "${ENFACT_WEBHOOK_URL:-}" ]; then
    echo "azd-postdeploy: enFact webhook: $ENFACT_WEBHOOK_URL?code=<key>  (key: az functionapp function keys list -g $AZURE_RESOURCE_GROUP -n $AZURE_FUNCTION_APP_NAME --function-name enfact_webhook)"
fi
echo "azd-postdeploy: done"
