# mk/aws.mk: stackdrop for a real AWS account. Included by the main Makefile.
#
# Targets:   build (the six Lambda packages: cargo-lambda, release, size-tuned; each zip's size),
#            package (upload them and the state machines to ARTIFACT_BUCKET, write the packaged
#            template), deploy (package, then deploy it with the AWS CLI; prints the bucket).
# Variables: ARCH (arm64, the default, or x86_64; build falls back to x86_64 where arm64 does not
#            build), STACK_NAME (stackdrop), REGION (AWS_REGION, else us-east-1), ARTIFACT_BUCKET
#            (an S3 bucket of yours in REGION that `cloudformation package` uploads the zips to;
#            deploy needs it), PARAMETERS (more template parameters, e.g.
#            "VpcId=vpc-0123456789abcdef0 DeployDeadlineSeconds=1200").

ARCH            ?= arm64
STACK_NAME      ?= stackdrop
REGION          ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION),us-east-1)
ARTIFACT_BUCKET ?=
PARAMETERS      ?=
# Where cargo-lambda puts the zips: the template's CodeUri (../target/lambda/BIN/bootstrap.zip).
LAMBDA_DIR      ?= target/lambda
TEMPLATE        ?= infra/template.yaml
PACKAGED        ?= $(LAMBDA_DIR)/packaged.yaml
# The architecture make build built (what deploy passes as the template's Architecture).
BUILT_ARCH      = $(LAMBDA_DIR)/ARCH
LAMBDA_BINS     := $(patsubst -p,,$(LAMBDA_PKGS))

.PHONY: build package deploy

build: $(VENV_STAMP) ## the Lambda packages for AWS: cargo-lambda, release (ARCH=arm64|x86_64), each zip's size
	@set -e; arch="$(ARCH)"; \
	lambda_build() { echo "make build: cargo lambda build --release --$$1 (a first build takes 15-25 minutes on 2 cores)"; \
	  PATH="$(VENV)/bin:$$PATH" "$(CARGO_LAMBDA)" lambda build --release --locked --output-format zip --$$1 $(LAMBDA_PKGS); }; \
	case "$$arch" in \
	  arm64) if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then \
	           rustup target add aarch64-unknown-linux-gnu || true; fi; \
	         lambda_build arm64 || { echo "make build: arm64 does not build here: building x86_64 (make deploy passes Architecture=x86_64)"; \
	           arch=x86_64; lambda_build x86-64; } ;; \
	  x86_64) lambda_build x86-64 ;; \
	  *) echo "make build: ARCH must be arm64 or x86_64, not $$arch" >&2; exit 2 ;; \
	esac; \
	echo "$$arch" > "$(BUILT_ARCH)"; \
	echo "make build: $$arch packages (infra/template.yaml's CodeUri):"; \
	for bin in $(LAMBDA_BINS); do \
	  zip="$(LAMBDA_DIR)/$$bin/bootstrap.zip"; \
	  printf '  %-48s %9d bytes (%.1f MB)\n' "$$zip" "$$(stat -c %s "$$zip")" "$$(stat -c %s "$$zip" | awk '{print $$1 / 1e6}')"; \
	done

package: $(VENV_STAMP) ## upload the packages and state machines to ARTIFACT_BUCKET; writes target/lambda/packaged.yaml
	@[ -n "$(ARTIFACT_BUCKET)" ] || { echo "make $@: set ARTIFACT_BUCKET to an S3 bucket of yours in $(REGION) (cloudformation package uploads the zips there)" >&2; exit 2; }
	@[ -f "$(BUILT_ARCH)" ] || { echo "make $@: no packages in $(LAMBDA_DIR): run make build first" >&2; exit 2; }
	"$(AWS)" cloudformation package --region "$(REGION)" --template-file "$(TEMPLATE)" \
	  --s3-bucket "$(ARTIFACT_BUCKET)" --output-template-file "$(PACKAGED)"

deploy: package ## package, then deploy it (ARTIFACT_BUCKET=..., STACK_NAME, REGION, PARAMETERS); prints the bucket
	"$(AWS)" cloudformation deploy --region "$(REGION)" --template-file "$(PACKAGED)" \
	  --stack-name "$(STACK_NAME)" --capabilities CAPABILITY_IAM \
	  --parameter-overrides Architecture=$$(cat "$(BUILT_ARCH)") $(PARAMETERS)
	@echo "make deploy: upload bundles to s3://$$("$(AWS)" cloudformation describe-stacks --region "$(REGION)" \
	  --stack-name "$(STACK_NAME)" --query "Stacks[0].Outputs[?OutputKey=='BucketName'].OutputValue" --output text)/"
