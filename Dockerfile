# The cluster's node image (cluster.yaml's docker: section), for the GPU worker types and the
# head alike: the official Ray GPU image at the pinned Ray version and Python, plus the pinned
# torch, vLLM (CUDA) and the project, installed as a package (not editable). A submitted job's
# runtime_env ships the current code as its working directory, which imports ahead of this copy.
#
#   docker build -t YOUR-REGISTRY/taosr:0.1.0 .
#   docker push YOUR-REGISTRY/taosr:0.1.0          # then name it in cluster.yaml (docker.image)
#
# tests/test_packaging.py checks these pins against pyproject.toml and constraints.txt.
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/taosr
COPY --chown=ray:users pyproject.toml constraints.txt README.md ./
COPY --chown=ray:users taosr/ taosr/
COPY --chown=ray:users actors/ actors/
COPY --chown=ray:users datasets/ datasets/
COPY --chown=ray:users training/ training/
COPY --chown=ray:users stages/ stages/
COPY --chown=ray:users ray_jobs/ ray_jobs/
COPY --chown=ray:users serve/ serve/

# torch first and exactly (its CUDA build from PyPI), then the project with the CUDA vLLM.
RUN python -m pip install --no-cache-dir torch==2.13.0 \
    && python -m pip install --no-cache-dir -c constraints.txt ".[gpu]" \
    && python -c "import taosr.ray_jobs.pipeline, vllm, deepspeed, ray; assert ray.__version__ == '2.60.0'"

ENV RAY_USAGE_STATS_ENABLED=0 \
    TOKENIZERS_PARALLELISM=false
