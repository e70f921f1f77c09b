#!/usr/bin/env bash
# The GPU checks and measurements of issues 14-17 in one go, for the device machine (run from the repo root, after
# `source .kit/install.sh`). Each step has its own time limit and writes its log / JSON under $OUT, so a step that
# runs out of time leaves the others' results.
# Steps: build tests diagnose scantests dyvm prune token scan vim mambavision vimtrain profile cltests vim224 tune
# kernelcheck prunebig longl tokenprof gapcheck trainmem bwdtune tune2 tune3 vim224t mvprofile
# mvquick mvfast mvprofcl graph segtune trainprof cudachunk mvcompile methods hostcost autocheck conv ckpttune ab methodtune fusedtrain graphtrain autotrain stridedzoh stridedquick stridedab stridedbwd stridedbwdquick fastmath softplus (default: all but the last thirty-five, in that order).
#
#   bash benchmarks/gpu_session.sh tests dyvm
set -u
OUT=${OUT:-/tmp/mmssm_gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
steps=${*:-build tests diagnose scantests dyvm prune token scan vim mambavision vimtrain profile cltests vim224 tune kernelcheck}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"  # (8 files come back)
run() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "[gpu_session] $name: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}
for step in $steps; do
  case $step in
    build) run build 200 python -m mmssm.ops.selective_scan.cuda_scan --build --quiet ;;
    tests) run tests 180 python -m pytest -p no:cacheprovider -q -rs -m "gpu or not gpu" \
             tests/test_models/test_backbones/test_variants_gpu.py tests/test_ops/test_selective_scan/test_keep_mask.py \
             tests/test_ops/test_fused.py tests/test_models/test_layers/test_mamba_mixer_channels_last.py \
             tests/test_ops/test_selective_scan/test_gpu_backends.py::test_torch_compile_fullgraph_through_a_vim_block ;;
    diagnose) run diagnose 60 python benchmarks/diagnose_top_bf16.py ;;
    scantests) run scantests 420 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" -k triton \
                 tests/test_ops/test_selective_scan/test_gpu_backends.py ;;
    dyvm) run dyvm 180 python benchmarks/dyvm_gpu.py ;;
    prune) run prune 180 python benchmarks/prune_export_gpu.py --out "$OUT/prune_export_gpu.json" ;;  # 2:4 included
    prunebig) run prunebig 180 python benchmarks/prune_export_gpu.py --batch 512 --out "$OUT/prune_export_gpu_b512.json" ;;
    longl) run longl 150 python benchmarks/vim_gpu.py --models vim_t,vim_t_cuda,vim_t_triton,vim_s,vim_s_cuda,vim_s_triton \
             --sizes 512:32,1248:8 --max-seconds 2 --json "$OUT/vim_longl.json" ;;
    trainmem) run trainmem 200 python benchmarks/vim_gpu.py --models vim_t --sizes 224:128 --max-seconds 2 \
                --train-models vim_t_cuda,vim_t_cuda_recompute,vim_t_triton,vim_t_triton_recompute,vim_t_cuda_cp,deit_t \
                --json "$OUT/vim_trainmem.json" ;;
    gapcheck) run gapcheck 90 python tests/test_ops/test_selective_scan/interpreted_ops.py gaps ;;
    tokenprof) run tokenprof 120 python benchmarks/token_pruning_gpu.py --arch tiny --profile 25 ;;
    token) run token_vim 150 python benchmarks/token_pruning_gpu.py --json "$OUT/token_pruning_vim.json"
           run token_pm 150 python benchmarks/token_pruning_gpu.py --model plainmamba --arch l3 \
             --json "$OUT/token_pruning_pm.json" ;;
    scan) run scan 300 python benchmarks/scan_gpu.py --backends cuda triton triton-cl --methods zoh bilinear --dtypes bf16 \
            --repeats 5 --rounds 3 --sdist-dir .kit/sdist --json "$OUT/scan_gpu.json" ;;
    vim) run vim 150 python benchmarks/vim_gpu.py --models vim_t,vim_t_cuda,vim_t_triton_graph,vim_t_unfused,deit_t,vim_s,vim_s_cuda,vim_s_unfused,deit_s \
           --sizes 224:128,1248:8 --max-seconds 2 --json "$OUT/vim_gpu.json" ;;
    mambavision) run mambavision 300 env MMSSM_SCAN_BACKEND=triton python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist \
                   --max-seconds 3 --deadline 150 --models mambavision_t,mambavision_t_mamba,mambavision_s,\
mambavision_s_mamba,mambavision_b,mambavision_b_mamba --train-models mambavision_t,mambavision_t_mamba \
                   --out "$OUT/mambavision_gpu.json" ;;
    vimtrain) run vimtrain 200 python benchmarks/vim_gpu.py --models vim_t,vim_t_cuda,vim_s,vim_s_cuda \
                --sizes 224:128,512:32 --max-seconds 2 --train-models vim_t_cuda,vim_t_triton,deit_t \
                --json "$OUT/vim_train_gpu.json" ;;
    profile) run profile 60 python benchmarks/profile_vim.py --models vim_t_triton --host --top 30 ;;
    cltests) run cltests 240 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" \
               tests/test_models/test_layers/test_mamba_mixer_channels_last.py tests/test_ops/test_fused.py \
               tests/test_ops/test_selective_scan/test_keep_mask.py tests/test_ops/test_eager.py ;;  # (scantests: the rest)
    vim224) run vim224 80 python benchmarks/vim_gpu.py --models vim_t,vim_t_cuda,vim_t_triton_graph,deit_t,vim_s,vim_s_cuda \
              --sizes 224:128 --max-seconds 2 --json "$OUT/vim224.json" ;;
    mvprofile) run mvprofile 60 env MMSSM_SCAN_BACKEND=triton python benchmarks/profile_vim.py --models mambavision_t \
                 --top 30
               run mvprofile_cl 60 env MMSSM_SCAN_BACKEND=triton python benchmarks/profile_vim.py --models mambavision_t \
                 --top 30 --channels-last ;;
    mvprofcl) run mvprofile_cl 60 env MMSSM_SCAN_BACKEND=triton python benchmarks/profile_vim.py --models mambavision_t \
                --top 30 --channels-last --fuse-conv-bn ;;
    trainprof) run trainprof 120 bash -c 'python benchmarks/profile_vim.py --models vim_t_triton --train --top 30 --host \
                 && MMSSM_SCAN_BACKEND=triton python benchmarks/profile_vim.py --models mambavision_t --train \
                 --channels-last --top 30' ;;
    mvquick) run mvtests 120 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" -k "triton" \
               tests/test_models/test_backbones/test_mamba_vision.py::test_gpu_backends_match_the_cpu_model
             run mvquick 240 env MMSSM_SCAN_BACKEND=triton python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist \
               --max-seconds 3 --deadline 150 --models mambavision_t,mambavision_t_mamba,mambavision_s,mambavision_s_mamba \
               --train-models '' --out "$OUT/mambavision_quick.json"
             run mvquick_cl 120 env MMSSM_SCAN_BACKEND=triton python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist \
               --max-seconds 3 --deadline 80 --models mambavision_t,mambavision_t_mamba,mambavision_s,mambavision_s_mamba \
               --train-models '' --channels-last --out "$OUT/mambavision_quick_cl.json" ;;
    mvfast) run mvfast 280 env MMSSM_SCAN_BACKEND=triton python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist \
              --max-seconds 2 --deadline 200 --channels-last --fuse-conv-bn \
              --models mambavision_t,mambavision_t_mamba,convnext_t,swin_t,mambavision_s,mambavision_s_mamba \
              --train-models '' --out "$OUT/mambavision_fast.json" ;;
    mvcompile) run mvcompile 240 env MMSSM_SCAN_BACKEND=triton python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist \
              --max-seconds 3 --deadline 150 --channels-last --fuse-conv-bn --compile \
              --models mambavision_t,mambavision_t_mamba,convnext_t --train-models '' \
              --out "$OUT/mambavision_compile.json" ;;
    graph) run graphtests 120 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" tests/test_engine/test_cuda_graph.py \
             tests/test_ops/test_fused.py
           run graphbench 120 bash -c 'for flag in "" --cuda-graph; do python tools/analysis/benchmark.py \
             configs/cls/vim-tiny-p16_8xb128_in1k.py --batch-size 128 --amp --iters 30 --warmup 3 $flag | tail -8; done' ;;
    vim224t) run vim224t 80 python benchmarks/vim_gpu.py --models vim_t,vim_t_triton_graph,deit_t,vim_s --sizes 224:128 \
               --max-seconds 2 --json "$OUT/vim224t.json" ;;  # (vim224 without the CUDA-extension models: no build)
    kernelcheck) run kernelcheck 150 bash -c 'for part in layouts chunked methods gaps segments; do
                   python tests/test_ops/test_selective_scan/interpreted_ops.py $part || exit 1; done' ;;
    cudachunk) run cudachunk_tests 110 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" \
                 tests/test_ops/test_selective_scan/test_cuda_segments.py tests/test_ops/test_selective_scan/test_cuda_scan.py
               run cudachunk_bench 90 python benchmarks/scan_tune.py --backend cuda --repeats 5 --rounds 3 \
                 --shapes 8,384,4096,16 2,384,16384,16 128,384,197,16 \
                 --variants default FWD_SEGMENT_L=1073741824,BWD_SEGMENT_L=1073741824 ;;  # (after build)
    methods) run methods 300 python benchmarks/scan_gpu.py --backends cuda triton-cl --methods zoh foh bilinear poly \
               highorder rk4 --dtypes bf16 --shapes 128,384,197,16 8,384,4096,16 2,384,16384,16 --repeats 5 --rounds 3 \
               --sdist-dir .kit/sdist --json "$OUT/scan_methods.json" ;;  # (after build) issue 17's non-ZOH 1.15x and mamba-ssm ratios
    segtune) run segtune 150 python benchmarks/scan_tune.py --shapes 8,384,4096,16 2,384,16384,16 4,384,1025,16 \
               --repeats 5 --variants default BWD_MIN_SEGMENT=1000000 BWD_MIN_SEGMENT=64 BWD_MIN_SEGMENT=256 ;;
    bwdtune) run bwdtune 150 python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --repeats 5 \
               --variants default BWD_BC_PARTIAL=0 CHECKPOINT_L=16 CHECKPOINT_L=64 BWD_WARPS=1 BWD_WARPS=4 \
               BWD_BLOCK_D=32 BWD_BLOCK_D=32,BWD_WARPS=1 ;;
    tune2) run tune2 300 python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --blocks 8 16 32 64 128 \
             --warps 1 2 4 --backward --repeats 5 --rounds 2 ;;
    tune3) run tune3 200 bash -c 'python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --blocks 32 64 128 \
             --warps 1 2 4 --repeats 5 --rounds 2 && python benchmarks/scan_tune.py --shapes 128,384,197,16 \
             --variants default BWD_BLOCK_D=32,BWD_WARPS=1 BWD_BLOCK_D=16,BWD_WARPS=1 BWD_WARPS=4 --repeats 5' ;;
    autocheck) run autocheck 330 python benchmarks/vim_gpu.py --models vim_t,vim_t_cuda,vim_t_triton,deit_t,vim_s,vim_s_cuda,\
vim_s_triton --sizes 224:128,512:32,1248:8 --max-seconds 2 --train-models vim_t_cuda,vim_t_triton,vim_s_cuda,vim_s_triton,deit_t \
                 --json "$OUT/vim_auto.json" ;;  # (after build) what 'auto' should pick, per length and for training
    conv) run convtests 240 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" \
            tests/test_models/test_layers/test_mamba_mixer_channels_last.py
          run conv 60 python benchmarks/conv_gpu.py --shapes 128,197,384 8,4096,384 ;;
    ckpttune) run ckpttune 150 python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --repeats 5 \
                --variants default CHECKPOINT_L=16 CHECKPOINT_L=8 CHECKPOINT_L=4 ;;  # the backward's scratch in L2?
    hostcost) run hostcost 150 bash -c 'python benchmarks/launch_overhead.py --models vim_t_triton && \
                python benchmarks/profile_vim.py --models vim_t_triton --batch 1 --passes 50 --host --top 40' ;;
    ab) for tree in ${BASE_TREE:-} .; do  # Vim-T inference and training on a base tree (an unpacked `git archive
          # REV mmssm benchmarks configs tools tests`, named by BASE_TREE) and on this one, same machine, same call
          [ -d "$tree" ] || continue
          name=ab_$( [ "$tree" = . ] && echo head || echo base )
          run $name 170 bash -c "cd $tree && PYTHONPATH=\$PWD:\$PYTHONPATH python benchmarks/vim_gpu.py --models vim_t_triton \
            --sizes 224:128 --max-seconds ${AB_SECONDS:-2} --train-models vim_t_triton --json $OUT/$name.json"
        done ;;
    fusedtrain) run fusedtrain 200 python benchmarks/vim_gpu.py --models vim_t_triton --sizes 224:128 --max-seconds 3 \
                  --train-models vim_t_triton_autograd,vim_t_triton,vim_t_triton_autograd,vim_t_triton,deit_t \
                  --json "$OUT/vim_fused_training.json" ;;  # fused_training (default) against autograd's unfused mixers, twice each
    graphtrain) run graphtraintests 150 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                  tests/test_engine/test_cuda_graph.py
                run graphtrain 280 python benchmarks/vim_gpu.py --models vim_t_triton_graph --sizes 224:128 --max-seconds 3 \
                  --train-models vim_t_triton_autograd,vim_t_triton_autograd_graph,vim_t_triton,vim_t_triton_graph,deit_t,deit_t_graph \
                  --json "$OUT/vim_graph_training.json" ;;  # whole training steps replayed from CUDA graphs
    autotrain) run autotrain_tests 150 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                 tests/test_tools/test_train.py::test_cuda_graph_training_with_clip_grad
               run autotrain 240 python benchmarks/vim_gpu.py --models vim_t_triton_graph --sizes 224:128 --max-seconds 3 \
                 --train-models vim_t_cuda_graph,vim_t_triton_graph,vim_t_cuda,vim_t_triton,deit_t_graph,deit_t \
                 --json "$OUT/vim_auto_training.json" ;;  # (after build) should 'auto' train channels-last now?
    stridedzoh) run stridedzoh_tests 90 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                  tests/test_ops/test_selective_scan/test_strided_zoh.py
                run stridedzoh_scan 100 python benchmarks/scan_tune.py --shapes 128,384,197,16 128,768,197,16 \
                  --repeats 5 --variants FWD_CUDA_ZOH=1,BWD_CUDA_ZOH=1 FWD_CUDA_ZOH=1 BWD_CUDA_ZOH=1 default
                run stridedzoh_vim 150 env MMSSM_TRITON_CUDA_ZOH=1 python benchmarks/vim_gpu.py --models vim_t_triton_graph,deit_t_graph \
                  --sizes 224:128 --max-seconds 2 --train-models vim_t_triton_graph,vim_t_triton,vim_t_cuda_graph,deit_t_graph \
                  --json "$OUT/vim_strided_zoh.json"
                run stridedzoh_vim_triton 60 env MMSSM_TRITON_CUDA_ZOH=0 python benchmarks/vim_gpu.py \
                  --models vim_t_triton_graph --sizes 224:128 --max-seconds 2 --train-models vim_t_triton_graph \
                  --json "$OUT/vim_triton_zoh.json"
                run stridedzoh_conv 45 python benchmarks/conv_gpu.py --shapes 128,197,384 8,4096,384
                run stridedzoh_mixer 120 env MMSSM_TRITON_CUDA_ZOH=1 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                  tests/test_models/test_layers/test_mamba_mixer_channels_last.py ;;  # (after build) the strided CUDA zoh kernels
    stridedquick) run stridedzoh_tests 90 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" \
                    tests/test_ops/test_selective_scan/test_strided_zoh.py
                  run stridedzoh_scan 70 python benchmarks/scan_tune.py --shapes 128,384,197,16 --repeats 5 \
                    --variants FWD_CUDA_ZOH=1,BWD_CUDA_ZOH=1 FWD_CUDA_ZOH=1 BWD_CUDA_ZOH=1 default
                  run stridedzoh_vim 100 env MMSSM_TRITON_CUDA_ZOH=1 python benchmarks/vim_gpu.py --models vim_t_triton_graph,deit_t_graph \
                    --sizes 224:128 --max-seconds 2 --train-models vim_t_triton_graph,deit_t_graph \
                    --json "$OUT/vim_strided_zoh.json"
                  run stridedzoh_vim_triton 50 env MMSSM_TRITON_CUDA_ZOH=0 python benchmarks/vim_gpu.py \
                    --models vim_t_triton_graph --sizes 224:128 --max-seconds 2 --train-models vim_t_triton_graph \
                    --json "$OUT/vim_triton_zoh.json" ;;  # stridedzoh's essentials, for a short call
    stridedab) run stridedab_scan 120 python benchmarks/scan_tune.py --shapes 128,384,197,16 128,768,197,16 \
                 --repeats 10 --kernels 10 --variants FWD_CUDA_ZOH=1,BWD_CUDA_ZOH=1 default FWD_CUDA_ZOH=1,BWD_CUDA_ZOH=1 default
               for run_zoh in a1 a0 b1 b0; do  # alternated, so that a drift of the GPU's clocks shows
                 zoh=${run_zoh:1}
                 run stridedab_vim_$run_zoh 80 env MMSSM_TRITON_CUDA_ZOH=$zoh python benchmarks/vim_gpu.py \
                   --models vim_t_triton_graph --sizes 224:128 --max-seconds 2 --train-models vim_t_triton_graph \
                   --json "$OUT/vim_zoh_$run_zoh.json"
               done
               run stridedab_others 150 env MMSSM_TRITON_CUDA_ZOH=1 python benchmarks/vim_gpu.py --models deit_t_graph \
                 --sizes 224:128 --max-seconds 2 --train-models vim_t_cuda_graph,deit_t_graph --json "$OUT/vim_others.json" ;;
    stridedbwd) run stridedbwd_tests 90 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                  tests/test_ops/test_selective_scan/test_strided_zoh.py
                run stridedbwd_scan 60 python benchmarks/scan_tune.py --shapes 128,384,197,16 --repeats 10 --kernels 10 \
                  --variants default FWD_CUDA_ZOH=0,BWD_CUDA_ZOH=0
                run stridedbwd_vim 150 python benchmarks/vim_gpu.py --models vim_t_triton_graph --sizes 224:128 \
                  --max-seconds 2 --train-models vim_t_triton_graph,vim_t_triton,vim_t_cuda --json "$OUT/vim_stridedbwd.json"
                for backend in cuda triton; do  # should 'auto' train channels-last (MambaVision: d_state 8, Triton)?
                  run stridedbwd_mv_$backend 90 env MMSSM_SCAN_BACKEND=$backend python benchmarks/mambavision_gpu.py \
                    --no-mamba --models mambavision_t --train-models mambavision_t --max-seconds 2 --deadline 80
                done ;;  # (after build) the default: the strided backward after the Triton forward
    stridedbwdquick) run stridedbwd_tests 90 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                       tests/test_ops/test_selective_scan/test_strided_zoh.py
                     run stridedbwd_vim 120 python benchmarks/vim_gpu.py --models vim_t_triton_graph --sizes 224:128 \
                       --max-seconds 2 --train-models vim_t_graph,vim_t,vim_t_cuda --json "$OUT/vim_stridedbwd.json" ;;  # short form
    fastmath) run fastmath_plumbing 120 python tests/test_ops/test_selective_scan/interpreted_ops.py plumbing
              run fastmath_tests 200 python -m pytest -p no:cacheprovider -q -x -m "gpu or not gpu" \
                -k "triton and (zoh or softplus or bilinear or foh)" tests/test_ops/test_selective_scan/test_gpu_backends.py \
                tests/test_ops/test_selective_scan/test_strided_zoh.py
              for round in ${FM_ROUNDS:-a b}; do  # a base tree (BASE_TREE, as for ab) and this one, alternated
                for tree in ${BASE_TREE:-} .; do
                  [ -d "$tree" ] || continue
                  name=$( [ "$tree" = . ] && echo head || echo base )_$round
                  run fastmath_scan_$name 60 bash -c "cd $tree && PYTHONPATH=\$PWD:\$PYTHONPATH python benchmarks/scan_tune.py \
                    --shapes 128,384,197,16 128,160,196,8 --repeats 10 --kernels 10 --variants default"
                  run fastmath_vim_$name 100 bash -c "cd $tree && PYTHONPATH=\$PWD:\$PYTHONPATH python benchmarks/vim_gpu.py \
                    --models vim_t_triton_graph --sizes 224:128 --max-seconds 2 --train-models vim_t_graph --json $OUT/vim_$name.json"
                done
              done ;;  # (after build) the kernels' softplus and sigmoid without libdevice's log1p and exact divisions
    softplus) run softplus_plumbing 45 python tests/test_ops/test_selective_scan/interpreted_ops.py plumbing
              run softplus_vim 100 python benchmarks/vim_gpu.py --models vim_t_triton_graph,deit_t_graph --sizes 224:128 \
                --max-seconds 2 --train-models vim_t_graph,deit_t_graph --json "$OUT/vim_softplus.json"
              run softplus_scan 45 python benchmarks/scan_tune.py --shapes 128,384,197,16 --repeats 10 --kernels 10 \
                --variants default SOFTPLUS_LOG_SAVED=0
              run softplus_tests 140 python -m pytest -p no:cacheprovider -q -m "gpu or not gpu" \
                tests/test_ops/test_selective_scan/test_strided_zoh.py tests/test_models/test_backbones/test_vim.py \
                tests/test_models/test_layers/test_mamba_mixer_channels_last.py \
                "tests/test_ops/test_selective_scan/test_gpu_backends.py::test_softplus_of_very_negative_delta" \
                "tests/test_ops/test_selective_scan/test_gpu_backends.py::test_bidirectional_with_options_in_one_direction_only" ;;  # (after build) the scan's softplus, Vim's patch matmul
    methodtune) run methodtune 200 python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --repeats 5 \
                  --methods zoh bilinear rk4 foh poly highorder --variants default FWD_BLOCK_D=32 ;;  # heavy methods' registers
    tune) run tune 80 python benchmarks/scan_tune.py --shapes 128,384,197,16 8,384,4096,16 --blocks 16 32 64 \
            --warps 2 4 8 ;;
    *) echo "unknown step $step (build tests diagnose scantests dyvm prune token scan vim mambavision vimtrain profile cltests vim224 tune kernelcheck prunebig longl tokenprof gapcheck trainmem bwdtune tune2 tune3 vim224t mvprofile mvquick mvfast mvprofcl graph segtune trainprof cudachunk mvcompile methods hostcost autocheck conv ckpttune ab methodtune fusedtrain graphtrain autotrain stridedzoh stridedquick stridedab stridedbwd stridedbwdquick fastmath softplus)"
       exit 2 ;;
  esac
done
