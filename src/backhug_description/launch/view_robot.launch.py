"""View the BackHug device in RViz 2: robot_state_publisher, joint sliders and RViz.

    ros2 launch backhug_description view_robot.launch.py hardware:=mock rows:=8 gui:=false

The URDF comes from backhug_description.load_description (the same validated path every other
package uses), so a bad layout argument fails here with the key and the value. Needs a ROS 2
distro (launch, robot_state_publisher, joint_state_publisher(_gui), rviz2).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from backhug_description import HARDWARE_CHOICES, load_description, share_directory


def _robot_state_publisher(context, *args, **kwargs) -> list:
    """Expand the description with the launch arguments; start robot_state_publisher."""
    rows = LaunchConfiguration('rows').perform(context)
    description = load_description(
        LaunchConfiguration('hardware').perform(context),
        LaunchConfiguration('config').perform(context) or None,
        rows=int(rows) if rows else None,
    )
    return [
        Node(
            package='robot_state_publisher',
            executable='robot_state_publisher',
            output='screen',
            parameters=[{'robot_description': ParameterValue(description.urdf, value_type=str)}],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    """Launch description: arguments, robot_state_publisher, joint state publisher, RViz."""
    gui = LaunchConfiguration('gui')
    arguments = [
        DeclareLaunchArgument(
            'hardware',
            default_value='sim',
            choices=list(HARDWARE_CHOICES),
            description='Hardware variant of the description (selects the ros2_control plugin).',
        ),
        DeclareLaunchArgument(
            'gui',
            default_value='true',
            choices=['true', 'false'],
            description='Start joint_state_publisher_gui (finger sliders) instead of the '
            'headless joint_state_publisher.',
        ),
        DeclareLaunchArgument(
            'rviz',
            default_value='true',
            choices=['true', 'false'],
            description='Start RViz 2 with rviz/backhug.rviz.',
        ),
        DeclareLaunchArgument(
            'rows',
            default_value='',
            description='Override the number of finger rows per side (empty: the config value).',
        ),
        DeclareLaunchArgument(
            'config',
            default_value='',
            description='Device config file (empty: config/device.yaml of this package).',
        ),
    ]
    rviz_config = str(share_directory() / 'rviz' / 'backhug.rviz')
    return LaunchDescription(
        [
            *arguments,
            OpaqueFunction(function=_robot_state_publisher),
            Node(
                package='joint_state_publisher_gui',
                executable='joint_state_publisher_gui',
                condition=IfCondition(gui),
            ),
            Node(
                package='joint_state_publisher',
                executable='joint_state_publisher',
                condition=UnlessCondition(gui),
            ),
            Node(
                package='rviz2',
                executable='rviz2',
                arguments=['-d', rviz_config],
                output='screen',
                condition=IfCondition(LaunchConfiguration('rviz')),
            ),
        ]
    )
