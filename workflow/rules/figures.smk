# Every figure and table is a declared file (ktos.study.plan.outputs.Outputs.figure_files and table_files): deleting
# one makes its rule run again, and the rule hands the same names to the command, which writes exactly these.
# One pair of rules per origin of the trajectory table: studies (this workflow's runs, written beside them) and
# reference (the committed table, drawn into results/redrawn/<study>, never over the committed files).
for origin in ORIGINS:

    rule:
        name:
            f"draw_figures_{origin}"
        input:
            table=OUTPUTS.figure_table(origin),
            run_info=OUTPUTS.run_info(origin) or [],
        output:
            [
                (
                    report(
                        path,
                        caption="../report/figures.rst",
                        category="Figures",
                        subcategory=origin,
                    )
                    if path.endswith(".png")
                    else path
                )
                for path in OUTPUTS.figure_files(origin)
            ],
        log:
            f"results/logs/{config['study']}/draw_figures_{origin}.log",
        benchmark:
            f"results/benchmarks/{config['study']}/draw_figures_{origin}.tsv"
        conda:
            # Not analysis.yaml: ktos.study.report.figures imports torch (ktos.losses.gradient_weight, the companion figure).
            "../envs/train.yaml"
        params:
            out_dir=lambda wildcards, output: Path(output[0]).parent,
            names=" ".join(OUTPUTS.figure_names(origin)),
            analysis=OUTPUTS.analysis_flags,
            run_info=run_info_flag,
        shell:
            "python -m ktos figures --table {input.table:q} --output {params.out_dir} --names {params.names} "
            "{params.analysis} {params.run_info} > {log} 2>&1"

    rule:
        name:
            f"write_tables_{origin}"
        input:
            table=OUTPUTS.figure_table(origin),
            run_info=OUTPUTS.run_info(origin) or [],
        output:
            [
                (
                    report(
                        path,
                        caption=f"../report/{Path(path).stem}.rst",
                        category="Tables",
                        subcategory=origin,
                    )
                    if Path(path).stem in ("verdict", "runs")
                    else path
                )
                for path in OUTPUTS.table_files(origin)
            ],
        log:
            f"results/logs/{config['study']}/write_tables_{origin}.log",
        benchmark:
            f"results/benchmarks/{config['study']}/write_tables_{origin}.tsv"
        conda:
            "../envs/analysis.yaml"
        params:
            out_dir=lambda wildcards, output: Path(output[0]).parent,
            names=" ".join(OUTPUTS.table_names(origin)),
            analysis=OUTPUTS.analysis_flags,
            run_info=run_info_flag,
        shell:
            "python -m ktos tables --table {input.table:q} --output {params.out_dir} --names {params.names} "
            "{params.analysis} {params.run_info} > {log} 2>&1"


rule answer:
    # The README's answer block from every committed study's tables (ktos.study.report.prose.answer); a test compares the
    # README with it. Into results/redrawn/, never over a committed file.
    input:
        sorted((PLAN.root / "results/reference").glob("*/tables/*.csv")),
    output:
        "results/redrawn/answer.md",
    log:
        "results/logs/answer.log",
    benchmark:
        "results/benchmarks/answer.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        reference=PLAN.root / "results/reference",
    shell:
        "python -m ktos answer --reference {params.reference:q} --output {output:q} > {log} 2>&1"
