from data_engine.cli import main

main()
