"""Shared base config: the paper's values (DL-VHD, ICCV 2021, Sec. 4.1 and SPEC.md).

Every task config starts from `get_base_config()` and changes a few fields.

The comments here are the key reference: `python -m tools.gen_config_docs` turns every key,
its default and the comment on its line (and the comment lines right above it) into
docs/configs.md, and tests/test_docs.py fails when that page is stale. A comment above a
`ml_collections.ConfigDict()` line introduces its group.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'run'  # default workdir: runs/<name>
  # dlvhd | sl | dlvhd_coarse_only | dlvhd_fine_only | dlvhd_no_distill (Table 4's ablations)
  # | dlvhd_coarse_sg (a named change: the coarse learner does not train the encoder)
  # | dan | coral | revgrad | mcd | afn (the UDA baselines); the registry is
  # dlvhd_jax/methods.py. model.use_encoder=False is the paper's "w/o T" for any method.
  c.method = 'dlvhd'
  c.seed = 0  # parameters, dropout and sampling (replica r of num_seeds uses seed + r)
  # R independently seeded models (seeds seed .. seed+R-1) trained and evaluated as one
  # vectorized program; results.json reports their mean, spread and 95% interval.
  c.num_seeds = 1
  # JAX's persistent compilation cache, shared by every mode (train, eval, sweep, benchmark,
  # extract, predict): a second launch loads its compiled programs. '' = off.
  c.compile_cache_dir = '~/.cache/dlvhd-jax/jax-compile'
  c.compare_methods = ()  # several methods on the same data, one sub-workdir each
  # A vectorized axis over one scalar hyper-parameter (dlvhd_jax/hparams.py: the learning
  # rate, lambda, tau or a UDA weight): every value trains the num_seeds seeds in the same
  # compiled program; results.json reports each value (per_value) and takes the one with the
  # best mean source-validation mAP (needs train.select=best_source_val). '' = off.
  c.vary = ml_collections.ConfigDict({'key': '', 'values': ()})

  # The dataset, its split and its features (docs/data.md).
  c.data = ml_collections.ConfigDict()
  # youtube_highlights (UMT layout) | tvsum | activitynet | synthetic (embedded):
  # data_pipelines/datasets.py
  c.data.name = 'youtube_highlights'
  c.data.root = ''  # folder with youtube_anno.json + video_features/ ('' for synthetic: <workdir>/data)
  # files: read data.root; tfds: the TFDS build of it (python -m data_pipelines.build_tfds) in
  # data.tfds_data_dir ('' = ~/tensorflow_datasets); the same videos and numbers.
  c.data.source = 'files'
  c.data.tfds_data_dir = ''
  c.data.synthetic_seed = 0  # data.name=synthetic: the seed of the generated dataset
  # Any `domain` of the annotation (a TVSum category code, an ActivityNet top-level category
  # or a prefix that names one alone).
  c.data.source_category = 'surfing'
  c.data.target_category = 'skiing'
  c.data.features = 'rgb+opt'  # rgb | opt | rgb+opt (concatenated) | any <name> with <vid>_<name>.npy
  # YouTube Highlights: umt (UMT's train/val lists) | official (the dataset authors'
  # Trai*/Test* lists) | random (the paper's code: 70/30 per category) | kfold (below).
  # TVSum: umt | paper (per category the 2 longest videos train, the other 3 test) | kfold.
  c.data.split = 'umt'
  # data.split=kfold (TVSum and the YouTube Highlights layout): a category's videos, sorted
  # by id, in num_folds folds (video i in fold i mod num_folds); fold `fold` tests, the
  # others train. Over all folds every video is tested once, by a model that did not train
  # on it (configs/transfer_matrix.py:tvsum).
  c.data.num_folds = 5
  c.data.fold = 0
  c.data.annotation = 'official'  # TVSum: official (ydata-*.tsv) | public (tvsum_anno.json)
  # Seconds per feature row of TVSum / ActivityNet features; -1 = the dataset's (TVSum 2 s as
  # the public I3D release, ActivityNet 3.2 s = 16 frames at 5 fps).
  c.data.clip_seconds = -1.0
  c.data.split_seed = 42  # seed of the paper's 70/30 random split
  # dtype of the device-resident feature bank: float32 | bfloat16 | float16
  c.data.bank_dtype = 'float32'
  # Feature normalization before training and scoring: none (paper) | l2 (each segment to unit
  # norm) | standardize (per dimension, mean and std of the source training segments).
  c.data.normalize = 'none'
  # Temporal context (a named change, data_pipelines/context.py): k > 0 appends to each
  # segment's feature the mean feature of the segments t-k .. t+k of its video ([D] -> [2D]),
  # before normalization; 0 = the paper (each segment's own feature).
  c.data.context = 0
  # More training data (a named change): the training videos of these categories, labels
  # included, join the source's (its validation videos stay its own; the source itself is
  # skipped; naming the target of a cross-category run is an error). () = the paper.
  c.data.extra_sources = ()
  # Training label of a borderline clip (match 0): -1 = non-highlight (SPEC); 0 keeps it
  # between highlight and non-highlight in softmax(y). Evaluation always uses match > 0.
  c.data.borderline_label = -1.0
  # TVSum's training label from its annotators' 1-5 scores (data_pipelines/tvsum.py
  # training_label): mean (paper) | above_median (share of annotators scoring the segment above
  # their median: what the top-5 protocol reads) | zscore (mean of standardized scores).
  c.data.graded_label = 'mean'
  # Share of the source category's training videos held out as source validation for
  # label-free model selection (eval.every_steps, train.select); 0 = the paper (none).
  c.data.val_fraction = 0.0

  # ActivityNet segment labels: spec (coverage, max over the category's events) | published
  # (the published code: last event wins, coverage cast to int).
  c.activitynet = ml_collections.ConfigDict({'label_rule': 'spec'})

  # The set Transformer and its scoring heads (dlvhd_jax/model.py; docs/method.md).
  c.model = ml_collections.ConfigDict()
  # published: the authors' code where the paper is silent (attention scale width^-1/2,
  # bias-free qkv, dropout after the GELU too, LayerNorm eps 1e-5, torch's default init,
  # heads W/4 -> W/16, the step decay one epoch early as their StepLR); v1: this project's
  # first model, for the numbers measured with it (dlvhd_jax/model.py).
  c.model.variant = 'published'
  # -1 = the feature dimension (no input projection, as the paper); another width adds a
  # linear input projection.
  c.model.width = -1
  c.model.depth = 5  # pre-LN Transformer blocks
  c.model.num_heads = 8  # attention heads
  c.model.mlp_ratio = 2  # MLP width = mlp_ratio * width (4096 -> 8192), GELU
  # Hidden widths of the scoring heads; () = the variant's (published: W/4, W/16 of the
  # head's input width W, i.e. 1024, 256 at W = 4096; v1: 1024, 256 at every width).
  c.model.head_dims = ()
  c.model.dropout = 0.5  # on the encoder's residual branches and after each ReLU of the heads
  c.model.use_encoder = True  # False = the paper's "w/o T" ablation
  # none (paper: a set is permutation invariant) | learned (a named change: a learned vector
  # per set slot, for sets in time order; needs sampling.mode=window and a method without
  # mixed sets, whose slots would tell target from source)
  c.model.position = 'none'
  # Compute dtype; parameters stay float32 (bfloat16: f32 master weights, f32 softmax and KL).
  c.model.dtype = 'float32'
  c.model.remat = False  # rematerialize encoder blocks (large batches)

  # How the training sets are drawn (dlvhd_jax/sampling.py), inside the compiled step.
  c.sampling = ml_collections.ConfigDict()
  c.sampling.set_size = 20  # N
  # random (paper: N random segments) | window (published code: a contiguous window of
  # half-width U{1..N/2})
  c.sampling.mode = 'random'
  # Source segments in a mixed set: half (paper: k = N/2) | uniform (published code:
  # k = floor(N r), r ~ U(0.3, 0.7))
  c.sampling.mixed_share = 'half'
  c.sampling.source_label_in_mixed = 0.0  # 0 (paper) or -1 (published code)

  c.loss = ml_collections.ConfigDict()
  c.loss.distill_weight = 1.0  # lambda (gradients flow through y_avg, as in the published code)
  # Which head L_distill trains: both (the paper) | fine (the coarse head teaches, unmoved)
  # | coarse (the fine head teaches); a named change, losses.distillation_loss.
  c.loss.distill_to = 'both'
  # tau of L_pred's KL target softmax(y / tau) (L_coarse and L_fine); 1 = the paper, < 1
  # sharpens it toward the highlights.
  c.loss.temperature = 1.0
  # L_pred's form (a named change, losses.set_rank_loss): kl (the paper) | rank, a pairwise
  # hinge max(0, margin - (s_i - s_j)) weighted by how much higher y_i is than y_j.
  c.loss.set_loss = 'kl'
  c.loss.rank_margin = 0.5

  # UDA baselines (dlvhd_jax/baselines.py): domain terms on the encoder outputs, per segment.
  # `weight` is each term's weight in the loss.
  c.uda = ml_collections.ConfigDict()
  # DAN (Long et al., ICML 2015): multi-kernel Gaussian MMD, the sum of num_kernels kernels
  # whose bandwidths are kernel_mul apart around the batch's mean pairwise squared distance.
  c.uda.dan = ml_collections.ConfigDict({'weight': 1.0, 'num_kernels': 5, 'kernel_mul': 2.0})
  # Deep CORAL (Sun & Saenko, ECCV-W 2016): ||C_S - C_T||_F^2 / (4 d^2) of the feature covariances.
  c.uda.coral = ml_collections.ConfigDict({'weight': 1.0})
  # RevGrad (Ganin & Lempitsky, ICML 2015): a domain discriminator behind gradient reversal,
  # its coefficient ramped as 2 / (1 + exp(-gamma p)) - 1 over the training progress p.
  c.uda.revgrad = ml_collections.ConfigDict({'weight': 1.0, 'gamma': 10.0})
  # MCD (Saito et al., CVPR 2018): two heads; supervised, then maximize their discrepancy on
  # target (heads only), then minimize it (encoder only). num_k: phase-C (encoder) steps per
  # batch; the original MCD code uses 4.
  c.uda.mcd = ml_collections.ConfigDict({'weight': 1.0, 'num_k': 1})
  # AFN (Xu et al., ICCV 2019): stepwise adaptive feature norm, the norm pushed up by delta_r
  # per step.
  c.uda.afn = ml_collections.ConfigDict({'weight': 0.05, 'delta_r': 1.0})

  # The optimizer, the schedule and the training loop (dlvhd_jax/train.py, optimizer.py).
  c.train = ml_collections.ConfigDict()
  # Source sets per step, global: split over every device of every process (the paper: one
  # set per step).
  c.train.batch_size = 1
  # Epochs as the published code counts them (one set per source segment).
  c.train.num_epochs = 50
  c.train.num_steps = 0  # > 0 overrides the epoch count
  # sgd (paper) | adamw (betas (momentum, 0.999), decoupled weight decay scaled by the
  # learning rate)
  c.train.optimizer = 'sgd'
  # SGD with torch semantics (weight decay added to the gradient).
  c.train.learning_rate = 1e-3
  c.train.momentum = 0.9
  c.train.weight_decay = 5e-4
  # step (paper: x lr_decay_factor every lr_decay_epochs) | cosine (to 0 at the last step) |
  # constant
  c.train.lr_schedule = 'step'
  c.train.warmup_steps = 0  # linear warmup from 0; the schedule above starts after it
  # The step schedule (scaled to num_steps when that is set).
  c.train.lr_decay_epochs = 20
  c.train.lr_decay_factor = 0.1
  c.train.steps_per_dispatch = 1  # training steps per compiled call (lax.scan)
  # A refused update (non-finite loss or gradient) is looked for at every log and before every
  # checkpoint (docs/reliability.md); max_checkpoints: the newest kept.
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 1000
  c.train.max_checkpoints = 2
  c.train.transfer_guard = 'allow'  # 'disallow': fail on any implicit host<->device copy in the loop
  # last: evaluate the final parameters (paper); best_source_val: per seed, the parameters
  # of the evaluation step with the best source-validation mAP (needs data.val_fraction > 0
  # and eval.every_steps > 0). Target labels are never used to choose anything.
  c.train.select = 'last'

  # The device mesh (dlvhd_jax/parallel.py): fsdp = k shards parameters and optimizer state
  # k ways (the sets are split over all devices either way); 1 = data parallelism.
  c.mesh = ml_collections.ConfigDict({'fsdp': 1})

  # Windowed inference over every test segment (dlvhd_jax/evaluation.py).
  c.eval = ml_collections.ConfigDict()
  c.eval.edge_rule = 'duplicate'  # duplicate (paper) | shrink (published code)
  # How a two-head method's (DL-VHD's) test score joins its heads: score = the mean of each
  # head's 2*sigmoid - 1 (paper, published code); logit = 2*sigmoid(mean of the logits) - 1, a
  # named change: a head saturated near 1 keeps its order instead of leaving it to the other;
  # zmean = the mean of each head standardized within the video, a named change: a flat head
  # (DL-VHD's coarse head on the embedded data) keeps its say in the order.
  c.eval.head_fusion = 'score'
  c.eval.batch_size = 1024  # windows per compiled call
  c.eval.every_steps = 0  # > 0: source-validation mAP every this many steps (metrics.jsonl)

  # --mode=predict (app/predict.py; docs/predict.md): a trained run (--workdir) applied to new
  # videos.
  c.predict = ml_collections.ConfigDict()
  c.predict.inputs = ''  # a video, a folder of videos / .npy files, or comma-separated paths
  c.predict.output_dir = ''  # '' = <workdir>/predictions
  c.predict.video = ''  # the video of a single .npy input (thumbnails and reel only)
  c.predict.segment_seconds = 0.0  # .npy timing; 0 = the run's extraction rule / even split
  c.predict.top_fraction = 0.2  # highlights: this fraction of the segments (top_k = 0)
  c.predict.top_k = 0  # > 0: this many top segments instead
  c.predict.reel_seconds = 30.0  # the reel's length at most
  c.predict.thumbnails = 4  # frames of the top segments drawn above the curve
  c.predict.weights = ''  # the C3D weights file, if it moved since extraction (sha256-checked)
  c.predict.batch_size = 16  # clips per extractor call (I3D: at most its extract config's 4)
  c.predict.decode_threads = 2  # videos decoded in parallel in background threads
  c.predict.decoder = 'pyav'  # pyav | nvdec (NVIDIA GPU decoding; see configs/extract_c3d.py)

  # --mode=benchmark (app/benchmark.py; docs/performance.md): random features fill the device
  # banks, the real step and evaluation are timed; needs no dataset.
  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.num_steps = 10  # timed steps (the median is reported)
  c.benchmark.warmup_steps = 2  # untimed steps first
  c.benchmark.batch_size = -1  # -1 = train.batch_size
  c.benchmark.dtype = ''  # '' = model.dtype
  c.benchmark.feature_dim = -1  # -1 = model.width if set, else 2048 (I3D rgb+opt)
  c.benchmark.num_videos = 64  # random videos in the feature banks
  c.benchmark.segments_per_video = 64  # segments of each random video
  c.benchmark.eval_windows = 2048  # evaluation windows timed
  # Side of the square matmul whose speed is the measured peak (`mfu`); 0 = 4096 on CPUs,
  # 16384 on accelerators.
  c.benchmark.matmul_size = 0
  return c
