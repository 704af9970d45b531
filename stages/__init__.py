"""taosr.stages: what the pipeline knows about stages: the registry (``registry``), the
manifests that let a rerun skip, redo or resume a stage (``manifest``), where trained policies
live (``policies``) and the command line every stage entrypoint shares (``job_args``)."""
