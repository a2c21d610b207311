#!/usr/bin/env bash
# Offline Hugging Face cache entry for google/t5-v1_1-base, config only: importing imagen-pytorch 2.1.0 reads that
# config in a default argument; the benchmarks pass precomputed text embeddings, so no weights are needed.
# Usage: bash bench/peer_hf_cache.sh DIR   (then HF_HOME=DIR HF_HUB_OFFLINE=1). Idempotent.
set -euo pipefail
HF="${1:?usage: peer_hf_cache.sh DIR}"
SNAP="$HF/hub/models--google--t5-v1_1-base/snapshots/0000000000000000000000000000000000000000"
if [ ! -f "$SNAP/config.json" ]; then
  mkdir -p "$SNAP" "$HF/hub/models--google--t5-v1_1-base/refs"
  printf '0000000000000000000000000000000000000000' > "$HF/hub/models--google--t5-v1_1-base/refs/main"
  cat > "$SNAP/config.json" <<'EOF'
{
  "architectures": ["T5ForConditionalGeneration"],
  "d_ff": 2048,
  "d_kv": 64,
  "d_model": 768,
  "decoder_start_token_id": 0,
  "dense_act_fn": "gelu_new",
  "dropout_rate": 0.1,
  "eos_token_id": 1,
  "feed_forward_proj": "gated-gelu",
  "initializer_factor": 1.0,
  "is_encoder_decoder": true,
  "is_gated_act": true,
  "layer_norm_epsilon": 1e-06,
  "model_type": "t5",
  "num_decoder_layers": 12,
  "num_heads": 12,
  "num_layers": 12,
  "output_past": true,
  "pad_token_id": 0,
  "relative_attention_max_distance": 128,
  "relative_attention_num_buckets": 32,
  "tie_word_embeddings": false,
  "vocab_size": 32128
}
EOF
fi
