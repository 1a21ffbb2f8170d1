# In-train pruning of CenterNet DLA-34 to 50 % of the dense model's measured
# latency, not its MACs (README, "Prune for measured latency"). psi is the
# latency the table predicts at the current masks over the dense model's;
# everything else is prune50's. Build the table once on the machine you
# deploy on, at the input you deploy at, with the threads you will use:
#
#   python tools/analysis_tools/build_latency_table.py \
#       configs/centernet_dla34_prune50_latency.py --device cpu --threads 1 \
#       --shape 384 1280 --out work_dirs/lut/centernet_dla34_384x1280_cpu1.json
#
# A table measured on another device, thread count or input shape is used
# with a warning that names both.
_base_ = ['./centernet_dla34_prune50.py']
custom_hooks = [
    dict(
        type='InTrainPruningHook',
        psi_target=0.5,
        b='auto',
        prune_start=10,
        prune_end=100,
        channel_multiple=16,
        by_epoch=True,
        cost='latency',
        latency_table='work_dirs/lut/centernet_dla34_384x1280_cpu1.json')
]
