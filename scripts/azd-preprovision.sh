#!/bin/sh
# azd preprovision hook (azure.yaml, issue 22): refuse to provision an environment that would talk
# to production from outside production, or whose alerts would reach nobody.
#
# Environment type: ENVIRONMENT_TYPE when set (dev, test or prod), else the rule of infra/main.bicep
# (environmentType): prod when the azd environment name is prod or production (any case), dev otherwise.
# A retention policy locked in Azure sets ARCHIVE_RETENTION_LOCKED=true (the template must not PUT it).
#
# Outside prod:
#   * ENFACT_API_BASE_URL is required (main.bicep defaults it to the production API in prod only,
#     and no enFact staging endpoint is known): the hook stops with the command to set it.
#   * ARCHIVE_ALLOWED_HOSTS is required, for the same reason (Inqom's staging download host is
#     not documented; production's is the default in prod only).
#   * INQOM_TOKEN_URL / INQOM_API_BASE_URL default to Inqom's staging (recette) endpoints in
#     main.bicep; set to a production endpoint they are refused unless ALLOW_PRODUCTION_ENDPOINTS=true.
# Everywhere: LOCK_ARCHIVE_RETENTION / PROTECT_DOCUMENTS_ACCOUNT must be true, false or unset (false in
# prod is a loud warning); an empty ALERT_EMAIL means the action group e-mails nobody. In prod the hook stops;
# elsewhere it prints a warning banner and goes on.
set -eu

fail=0
error() {
    echo "azd-preprovision: ERROR: $*" >&2
    fail=1
}

env_type=${ENVIRONMENT_TYPE:-}
if [ -z "$env_type" ]; then
    case "$(printf '%s' "${AZURE_ENV_NAME:-}" | tr '[:upper:]' '[:lower:]')" in
        prod|production) env_type=prod ;;
        *) env_type=dev ;;
    esac
fi
case "$env_type" in
    dev|test|prod) ;;
    *) echo "azd-preprovision: ERROR: ENVIRONMENT_TYPE is '$env_type': use dev, test or prod (lower case, as main.bicep allows)" >&2
       exit 1 ;;
esac

# A locked retention policy refuses the template's PUT: a provision from another machine, a pipeline
# or a re-created environment must learn that it is locked from Azure, not from one machine's .env.
if [ "${ARCHIVE_RETENTION_LOCKED:-false}" != "true" ] && [ -n "${STORAGE_ACCOUNT_NAME:-}" ] \
        && [ -n "${AZURE_RESOURCE_GROUP:-}" ] && command -v az >/dev/null 2>&1; then
    state=$(az storage container immutability-policy show --resource-group "$AZURE_RESOURCE_GROUP" \
        --account-name "$STORAGE_ACCOUNT_NAME" --container-name "${ARCHIVE_CONTAINER:-archive}" \
        --query state -o tsv 2>/dev/null || true)
    if [ "$state" = "Locked" ]; then
        echo "azd-preprovision: the archive retention policy is locked in Azure: ARCHIVE_RETENTION_LOCKED=true"
        azd env set ARCHIVE_RETENTION_LOCKED true || error "could not record ARCHIVE_RETENTION_LOCKED=true (azd env set); set it, or this provision fails on the locked policy"
    fi
fi

if [ "$env_type" != "prod" ]; then
    if [ -z "${ENFACT_API_BASE_URL:-}" ]; then
        error "environment '${AZURE_ENV_NAME:-?}' is '$env_type', not prod: ENFACT_API_BASE_URL is required (no enFact staging endpoint is known, and the production API is the default in prod only). Set it: azd env set ENFACT_API_BASE_URL <your enFact test endpoint>"
    fi
    if [ -z "${ARCHIVE_ALLOWED_HOSTS:-}" ]; then
        error "environment '${AZURE_ENV_NAME:-?}' is '$env_type', not prod: ARCHIVE_ALLOWED_HOSTS is required (the host of Inqom's staging download URLs is not documented; production's is the default in prod only). Set it: azd env set ARCHIVE_ALLOWED_HOSTS <host of the public-url answers>"
    fi
    if [ "${ALLOW_PRODUCTION_ENDPOINTS:-false}" != "true" ]; then
        case "${INQOM_TOKEN_URL:-}" in
            https://auth.inqom.com/*)
                error "INQOM_TOKEN_URL is Inqom's production identity server in a '$env_type' environment. Unset it (azd env set INQOM_TOKEN_URL '') for staging, or set ALLOW_PRODUCTION_ENDPOINTS=true deliberately." ;;
        esac
        case "${INQOM_API_BASE_URL:-}" in
            *wa-fred-accounting-documents-prod.*)
                error "INQOM_API_BASE_URL is Inqom's production API in a '$env_type' environment. Unset it (azd env set INQOM_API_BASE_URL '') for staging, or set ALLOW_PRODUCTION_ENDPOINTS=true deliberately." ;;
        esac
    fi
fi

for lock in LOCK_ARCHIVE_RETENTION PROTECT_DOCUMENTS_ACCOUNT; do
    eval "value=\${$lock:-}"
    case "$value" in
        ''|true) ;;
        false)
            if [ "$env_type" = "prod" ]; then
                echo "azd-preprovision: WARNING: $lock=false in prod: the books lose a protection an IT reviewer will ask for (infra/README.md, the archive)." >&2
            fi ;;
        *) error "$lock is '$value': use true, false, or unset it for the environment's default" ;;
    esac
done

if [ -z "${ALERT_EMAIL:-}" ]; then
    if [ "$env_type" = "prod" ]; then
        error "ALERT_EMAIL is empty: the alerts (stalled documents, poison messages, dead-lettered events) would e-mail nobody. Set it: azd env set ALERT_EMAIL ops@cabinet.example"
    else
        {
            echo "################################################################################"
            echo "# azd-preprovision: WARNING: ALERT_EMAIL is empty.                             #"
            echo "# The alerts of environment '${AZURE_ENV_NAME:-?}' will fire and NOTIFY NOBODY."
            echo "# Set it: azd env set ALERT_EMAIL ops@cabinet.example                           #"
            echo "################################################################################"
        } >&2
    fi
fi

exit "$fail"
