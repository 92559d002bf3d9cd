"""lesion_training: model pipeline for lesiond (HAM10000 -> int8 TFLite MobileNetV2)."""
