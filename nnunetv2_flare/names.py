"""The names the package shares with nnU-Net and its users, in one place: trainer classes, plans and configuration
names, the checkpoint file and environment variables. No imports: the CLIs' `-h` reads these."""

# trainers (nnunetv2_flare.training; nnU-Net finds them through nnUNet_extTrainer, see trainers/)
LOCATOR_TRAINER = "nnUNetTrainerFlareLocator"
ORGAN_TRAINER = "nnUNetTrainerFlareOrgans"

# plans (plans/flare_plans.json) and their configurations
PLANS = "FlarePlans"
LOCATOR_CONFIGURATION = "flare_locator"
ORGAN_CONFIGURATION = "flare_organs"
ORGAN_NARROW_CONFIGURATION = "flare_organs_narrow"  # flare_organs with the paper's narrower network
DEFAULT_CONFIGURATIONS = (LOCATOR_CONFIGURATION, ORGAN_CONFIGURATION, ORGAN_NARROW_CONFIGURATION)

# the checkpoint nnUNetv2_train writes at the end of training, in fold_<f>/
CHECKPOINT = "checkpoint_final.pth"

# environment variables
CACHE_ENV = "NNUNETV2_FLARE_CACHE"  # where converted OpenVINO models go when the model folder is read-only
# time-boxed training (training/time_boxed.py), set by nnUNetv2_flare_demo for the nnUNetv2_train it starts
DEADLINE_ENV = "nnUNetFlare_demo_deadline"
MAX_EPOCHS_ENV = "nnUNetFlare_demo_max_epochs"
ITERATIONS_ENV = "nnUNetFlare_demo_iterations"
BATCH_SIZE_ENV = "nnUNetFlare_demo_batch_size"
LR_ENV = "nnUNetFlare_demo_lr"
SEED_ENV = "nnUNetFlare_demo_seed"  # the demo trainers' seed (network initialisation, patch sampling)
THREADS_ENV = "nnUNetFlare_demo_threads"  # the demo trainers' CPU threads (nnUNetv2_train takes every core)

# the checkpoint entry in which any-window training records the window shapes it drew from (window_shapes.py)
WINDOW_CHECKPOINT_KEY = "flare_window"
