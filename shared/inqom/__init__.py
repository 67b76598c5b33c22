"""Inqom access: the client of its accounting-documents API, the fleet-wide rate budget, the poll cadence.

    inqom = InqomClient(settings.inqom_api_base_url, http.with_auth(tokens))      # shared.inqom.client
    budget = InqomBudget.from_services(services)                                  # shared.inqom.budget
    PollPolicy.from_settings(settings).next_delay("Processing", polls=3)          # shared.inqom.polling

May import: the foundation modules at ``shared/`` (http, auth, config, secrets, storage, observability).
"""
