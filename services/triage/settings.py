from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.triage.classifier import Classifier
from services.triage.decision import DecisionPolicy
from services.triage.incident_policy import IncidentPolicy
from services.triage.model import DEFAULT_MODEL_PATH, TextModel
from services.triage.rules import load_rules
from shared.settings import ServiceSettings


class TriageSettings(ServiceSettings):
    """Env prefix TRIAGE_ for triage's own settings (e.g. TRIAGE_RULES_FILE)."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", populate_by_name=True)

    service_name: str = "triage"
    http_port: int = 8081
    # Lexicons, weights, thresholds and due times; None means the bundled rules.toml.
    rules_file: Path | None = None
    # The text model beside the rules (python -m services.triage train writes it); None
    # means the bundled model/triage_model.npz. TRIAGE_USE_MODEL=false: the rules alone.
    model_file: Path | None = None
    use_model: bool = True
    # A decision less confident than this is flagged needs_review (top of the queue).
    review_below: float = DecisionPolicy.review_below
    # Opt-in: a more urgent category the model gives at least this probability lends its
    # priority (decision.py). Unset: priority follows the contract's rule.
    priority_hedge: float | None = DecisionPolicy.priority_hedge
    # A complaint about the same transaction by the same customer within this window
    # is linked to the first one instead of opening a second case.
    duplicate_window_days: int = 30
    # Incidents (see incident_policy.py): many complaints with one cause in a short window.
    incident_window_minutes: int = 30
    incident_baseline_hours: int = 24
    incident_merchant_min_complaints: int = 5
    incident_category_min_complaints: int = 20
    incident_spike_factor: float = 3.0

    def classifier(self) -> Classifier:
        """Rules and model are loaded and validated here, at start-up: a broken file
        stops the service loudly."""
        rules = load_rules(self.rules_file)
        model = TextModel.load(self.model_file or DEFAULT_MODEL_PATH) if self.use_model else None
        return Classifier(rules, model, self.decision_policy())

    def decision_policy(self) -> DecisionPolicy:
        return DecisionPolicy(review_below=self.review_below, priority_hedge=self.priority_hedge)

    def classifier_without_model(self) -> Classifier:
        return Classifier(load_rules(self.rules_file))

    def incident_policy(self) -> IncidentPolicy:
        return IncidentPolicy(
            window=timedelta(minutes=self.incident_window_minutes),
            baseline=timedelta(hours=self.incident_baseline_hours),
            merchant_min_complaints=self.incident_merchant_min_complaints,
            category_min_complaints=self.incident_category_min_complaints,
            spike_factor=self.incident_spike_factor,
        )
