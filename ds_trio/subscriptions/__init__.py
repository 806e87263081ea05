"""Subscriptions (spec 6, 7): webhook and pull-wake delivery of stream changes."""

from .manager import DeliverySettings as DeliverySettings
from .manager import SubscriptionHost as SubscriptionHost
from .manager import SubscriptionManager as SubscriptionManager
from .signing import Signer as Signer
from .signing import load_or_create_key as load_or_create_key
