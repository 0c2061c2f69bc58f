from lever_cli.main import main

main()
