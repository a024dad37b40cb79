#!/usr/bin/env bash
# One GPU-machine session: install the carried wheels and the project, then run the steps named in
# $STEPS (default: check one_batch) with logs and JSON under $OUT (or ./gpu_out). Each step has its own
# time limit so one hang does not lose the others' results. Run from the repository root with `.whl`
# and `.bench_tok` carried (and `.bench_cache` for pytest_others):  STEPS="check one_batch" bash benchmarks/gpu_session.sh
# Steps: check (kernels+backends, e2e greedy + pool sizing, timings), e2e, backends, timings, sweep, sweep_extend,
# pytest_gpu, pytest_m_gpu (the whole `pytest -m gpu` suite), pytest_others, one_batch, offline (hf / naive / full arms, one process each),
# offline_engine (full + full-nooverlap + radix), offline_one (one bench_offline process on $OFFLINE_MODEL),
# serving (serving_arms.py), sampling_bench, offline_old (offline_one on an older tree in ./.old), programs (bench_programs.py vs SGLang 0.2.10's frontend on
# $PROGRAMS_MODEL dummy weights; needs the sglang-0.2.10 wheel in .whl: ../shared/device/fetch-wheels.sh sglang==0.2.10),
# vlm (bench_vlm.py: image-QA requests/s at llava-1.5-7b shapes vs transformers generate; VLM_ARGS),
# router (bench_router.py: cache-aware vs round-robin over ROUTER_WORKERS replicas on this GPU; ROUTER_ARGS).
# TIMELINE=1 (serving): a forward timeline per arm, summarized into serving_arms.json (see the serving step).
# PYSPY=1 records a py-spy profile of every step (raw stacks, summarize with benchmarks/pyspy_summary.py);
# PYSPY_ARGS adds py-spy flags (e.g. --idle: waiting threads too, to see where a stall waits).
# Arguments per step through env vars: ONE_BATCH_ARGS, OFFLINE_ARGS, SERVING_ARGS, PROGRAMS_ARGS, *_LIMIT (seconds); a step
# named "serving:full" reads SERVING_ARGS_full, SERVING_LIMIT_full, ... instead (any step, any tag).
# .bench_cache (tokenizer-only stand-in for the default model): python benchmarks/model_dirs.py --default-stand-in .bench_cache
set -u
OUT=${OUT:-$PWD/gpu_out}; mkdir -p "$OUT"
STEPS=${STEPS:-"check one_batch"}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SGLANG_CACHE_DIR=/tmp/sglang-cache
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/session.log"; }
# every wheel but SGLang 0.2.10's (it also imports as `sglang`: it gets a folder of its own, /tmp/sgl0210, that
# only the programs step's SGLang arm puts on its path)
wheels=(); for w in .whl/*.whl; do case $(basename "$w") in sglang-*) ;; *) wheels+=("$w") ;; esac; done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
  && export PYTHONPATH=/tmp/site || { log "wheel install failed"; exit 1; }
for w in .whl/sglang-0.2.10-*.whl; do  # pure Python; its frontend needs requests, tqdm, numpy (in the image)
  [ -f "$w" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sgl0210 "$w"
done
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { log "project install failed"; tail "$OUT/pip.log"; exit 1; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
  python3 -c "import flashinfer; print('flashinfer', flashinfer.__version__)"
  echo "commit ${COMMIT:-unknown} (+ working tree)"; } 2>&1 | tee -a "$OUT/session.log"
run_step() {  # name, limit seconds, command...
  local name=$1 limit=$2; shift 2
  log "step $name (limit ${limit}s): $*"
  local prof=()  # PYSPY=1: sample every Python thread of the step and its children (py-spy wheel in .whl)
  [ -n "${PYSPY:-}" ] && [ -x /tmp/site/bin/py-spy ] && \
    prof=(/tmp/site/bin/py-spy record -r "${PYSPY_RATE:-100}" -f raw --threads --subprocesses --nonblocking ${PYSPY_ARGS:-} \
      -o "$OUT/$name.pyspy" --)
  timeout "$limit" "${prof[@]}" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  log "step $name rc=$rc"; tail -n 40 "$OUT/$name.log"
}
for step in $STEPS; do
  # "name:tag" runs step `name` again with its own settings: any variable X_tag overrides X for it
  s=${step%%:*}; tag=; [ "$step" != "$s" ] && tag=${step#*:}
  (  # a subshell: one tagged step's overrides do not leak into the next
  if [ -n "$tag" ]; then  # every variable NAME_tag (e.g. OFFLINE_ARGS_b1, OFFLINE_MODEL_b1) sets NAME
    for v in $(compgen -v | grep -E "^[A-Z0-9_]+_${tag}\$"); do eval "${v%_$tag}=\${!v}"; done
  fi
  case $s in
    check)  # separate processes: a kernel fault must not take the later sections with it
      run_step check ${CHECK_LIMIT:-150} python3 benchmarks/check_kernels.py --only kernels backends --out "$OUT/check_kernels.json"
      run_step check_e2e ${CHECK_LIMIT:-150} python3 benchmarks/check_kernels.py --only greedy memory --out "$OUT/check_e2e.json"
      run_step timings ${CHECK_LIMIT:-150} python3 benchmarks/check_kernels.py --only timings --out "$OUT/kernel_timings.json" ;;
    one_batch) run_step one_batch ${ONE_BATCH_LIMIT:-300} python3 benchmarks/bench_one_batch.py --out "$OUT/bench_one_batch.json" ${ONE_BATCH_ARGS:-} ;;
    pytest_gpu) run_step pytest_gpu ${PYTEST_LIMIT:-120} python3 -m pytest -q -x -p no:cacheprovider \
        tests/test_kernels_triton.py tests/test_kernels_cascade.py tests/test_sampling_sampler.py \
        tests/test_sampling_penalties.py ;;
    offline_engine) run_step offline_full ${OFFLINE_FULL_LIMIT:-150} python3 benchmarks/bench_offline.py ${OFFLINE_ARGS:-} \
        --arms full full-nooverlap --out "$OUT/bench_offline_full.json" ;;
    sweep) run_step sweep ${SWEEP_LIMIT:-120} python3 benchmarks/check_kernels.py --only sweep --out "$OUT/decode_sweep.json" ;;
    sweep_extend) run_step sweep_extend ${SWEEP_EXTEND_LIMIT:-150} python3 benchmarks/check_kernels.py --only sweep_extend \
        --out "$OUT/extend_sweep.json" ;;
    e2e) run_step check_e2e ${E2E_LIMIT:-150} python3 benchmarks/check_kernels.py --only greedy memory --out "$OUT/check_e2e.json" ;;
    backends) run_step backends ${BACKENDS_LIMIT:-240} python3 benchmarks/check_kernels.py --only backends --out "$OUT/check_backends.json" ;;
    pytest_m_gpu)  # the whole GPU suite (`pytest -m gpu`); .bench_cache stands in for the default model
      SGLANG_CACHE_DIR=$PWD/.bench_cache run_step pytest_m_gpu ${PYTEST_LIMIT:-300} python3 -m pytest -q -m gpu \
        -p no:cacheprovider tests ;;
    pytest_others)  # other areas' GPU tests; .bench_cache stands in for the default model (tokenizer only)
      SGLANG_CACHE_DIR=$PWD/.bench_cache run_step pytest_others ${PYTEST_OTHERS_LIMIT:-150} python3 -m pytest -q \
        -p no:cacheprovider tests/test_engine_tiny.py tests/test_scheduler_toy.py tests/test_radix_cache.py tests/test_model_gpu.py ;;
    sampling_bench) run_step sampling_bench ${SAMPLING_LIMIT:-40} python3 benchmarks/bench_sampling.py --device cuda --out "$OUT/bench_sampling.json" ;;
    timings) run_step timings ${TIMINGS_LIMIT:-90} python3 benchmarks/check_kernels.py --only timings --out "$OUT/kernel_timings.json" ;;
    offline)  # one process per arm group, fastest first: a slow arm hitting its limit loses only itself
      run_step offline_full ${OFFLINE_FULL_LIMIT:-150} python3 benchmarks/bench_offline.py ${OFFLINE_ARGS:-} \
        --arms full full-nooverlap --out "$OUT/bench_offline_full.json"
      run_step offline_hf ${OFFLINE_HF_LIMIT:-180} python3 benchmarks/bench_offline.py ${OFFLINE_ARGS:-} \
        --arms hf --skip-radix --out "$OUT/bench_offline_hf.json"
      run_step offline_naive ${OFFLINE_NAIVE_LIMIT:-200} python3 benchmarks/bench_offline.py ${OFFLINE_ARGS:-} \
        --arms naive --skip-radix --out "$OUT/bench_offline_naive.json" ;;
    serving)  # TIMELINE=1: each arm records a forward timeline (timeline_<arm>-<pid>.jsonl, in results.tgz) and its
      # per-run summary lands in the arm's JSON under "timeline" (benchmarks/timeline_summary.py)
      run_step serving${tag:+_$tag} ${SERVING_LIMIT:-300} python3 benchmarks/serving_arms.py \
        --out "$OUT/serving_arms${tag:+_$tag}.json" ${TIMELINE:+--timeline} ${SERVING_ARGS:-} ;;
    offline_old)  # the same offline run on an older tree carried in ./.old (git archive REV | tar -x -C .old), in one
      # call with offline_one, for a before/after comparison on one machine (the host speed differs between machines)
      mkdir -p /tmp/oldpkg && ln -sfn "$PWD/.old" /tmp/oldpkg/sglang
      SGLANG_BENCH_TOKENIZER=$PWD/.bench_tok PYTHONPATH=/tmp/oldpkg:$PYTHONPATH run_step offline_old${tag:+_$tag} \
        ${OFFLINE_LIMIT:-300} python3 .old/benchmarks/bench_offline.py --model-path \
        "$(SGLANG_BENCH_TOKENIZER=$PWD/.bench_tok python3 benchmarks/model_dirs.py ${OFFLINE_MODEL:-llama-3.2-1b})" \
        --load-format dummy --device cuda --dtype bfloat16 --skip-radix ${OFFLINE_ARGS:-} \
        --out "$OUT/bench_offline_old${tag:+_$tag}.json" ;;
    offline_one)  # one process, the arms in $OFFLINE_ARGS (--arms ...), on model $OFFLINE_MODEL (dummy weights)
      run_step offline${tag:+_$tag} ${OFFLINE_LIMIT:-300} python3 benchmarks/bench_offline.py --model-path \
        "$(python3 benchmarks/model_dirs.py ${OFFLINE_MODEL:-llama-3.2-1b})" --load-format dummy --device cuda \
        --dtype bfloat16 --skip-radix ${OFFLINE_ARGS:-} --out "$OUT/bench_offline${tag:+_$tag}.json" ;;
    programs)  # one server of ours, the five arms of bench_programs.py; the JSON and markdown table come back
      run_step programs${tag:+_$tag} ${PROGRAMS_LIMIT:-580} python3 benchmarks/bench_programs.py --model-path \
        "$(python3 benchmarks/model_dirs.py ${PROGRAMS_MODEL:-llama-3.2-1b})" --load-format dummy --device cuda \
        --dtype bfloat16 --sglang-target /tmp/sgl0210 ${PROGRAMS_ARGS:---items 64 256} \
        --json "$OUT/bench_programs${tag:+_$tag}.json" --markdown "$OUT/bench_programs${tag:+_$tag}.md" ;;
    vlm)  # image-QA requests/s at llava-1.5-7b shapes (dummy weights): ours vs transformers generate, same run
      run_step vlm${tag:+_$tag} ${VLM_LIMIT:-540} python3 benchmarks/bench_vlm.py ${VLM_ARGS:-} \
        --out "$OUT/bench_vlm${tag:+_$tag}.json" ;;
    router)  # cache-aware vs round-robin over $ROUTER_WORKERS replicas of ours on this GPU (bench_router.py, dummy weights)
      run_step router${tag:+_$tag} ${ROUTER_LIMIT:-400} python3 benchmarks/bench_router.py --model-path \
        "$(python3 benchmarks/model_dirs.py ${ROUTER_MODEL:-llama-3.2-1b})" --num-workers ${ROUTER_WORKERS:-2} \
        --out "$OUT/bench_router${tag:+_$tag}.json" ${ROUTER_ARGS:-} ;;
    *) log "unknown step $s" ;;
  esac
  )
done
log "done"
# only 8 files come back from the device machine: bundle everything, keep the session log beside it
(cd "$OUT" && tar czf results.tgz --exclude results.tgz --exclude session.log * && find . -maxdepth 1 -type f ! -name results.tgz ! -name session.log ! -name '*.json' -delete)
