"""Losses: margin arithmetic, softmax cross-entropy, triplet loss, coupled weight decay."""
from tfface.losses.classification import softmax_cross_entropy
from tfface.losses.margin import combined_margin_logits
from tfface.losses.triplet import triplet_loss
from tfface.losses.triplet import triplet_loss_and_active
from tfface.losses.weight_decay import l2_weight_decay
from tfface.losses.weight_decay import weight_decay_variables

__all__ = ["combined_margin_logits", "softmax_cross_entropy", "triplet_loss",
           "triplet_loss_and_active", "l2_weight_decay", "weight_decay_variables"]
