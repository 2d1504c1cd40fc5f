rule extract_kl:
    input:
        trajectories=run_files("trajectory.jsonl"),
        run_info=run_files("run_info.json"),
    output:
        report(
            "results/study/trajectories.csv",
            caption="../report/trajectories.rst",
            category="Trajectories",
        ),
    log:
        "results/logs/extract_kl.log",
    benchmark:
        "results/benchmarks/extract_kl.tsv"
    conda:
        "../../environment.yml"
    params:
        run_dirs=run_dirs(),
    shell:
        "python -m ktos extract-kl --runs {params.run_dirs} --output {output} > {log} 2>&1"
